"""Policies (expert, random, Hugging Face model) and the ReAct prompt format."""
