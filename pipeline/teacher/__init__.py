"""The listwise LLM teacher: sliding windows, prompts, reply parsing, backends and the driver."""
