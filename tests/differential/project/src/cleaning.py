"""Helpers the project's notebooks share (imported with sys.path.append("..") as they do)."""

import pandas as pd


def load_measurements(path="../data/measurements.csv"):
    """The rain gauge readings, with the day parsed."""
    return pd.read_csv(path, parse_dates=["day"])


def daily_totals(frame):
    """Millimetres per day over all stations."""
    return frame.groupby("day")["value"].sum().rename("total_mm")
