"""Scoring trained models honestly: intervals from resampling subjects, paired comparisons."""
