"""The teacher signal: prompt and reply alignment, the LM head at the answer positions, the store reader, and the loss math over them."""
