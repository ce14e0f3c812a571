"""Process settings: runtime, local paths, precision names, speed levers."""
