"""A run on disk: its directory and lock (`directory`), its saved state and resuming
(`state`), the variables file format (`variables`), background writes (`background`) and
atomic files (`atomic`).
"""
