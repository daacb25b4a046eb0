"""Shipped calibration/evaluation data (see README.md here); a package only so it installs with clipedge."""
