"""Summaries printed as lme4 prints them, R's number formatting, and plots."""
