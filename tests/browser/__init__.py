"""The web app in a real Chromium, driven by Playwright against the real servers."""
