"""The demo: a small versioned app and scripted scenarios that run a canary end to end locally."""
