"""Policies (scripted, Hugging Face model) chosen by name in `registry`, and the ReAct prompt format."""
