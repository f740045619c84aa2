"""Figures, built from the tidy Parquet tables alone."""
