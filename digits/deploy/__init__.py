"""Using a trained model: every saved format behind one `predict` (`runtimes`) and the web app
(`service`, with its page `serve_page.html`).
"""
