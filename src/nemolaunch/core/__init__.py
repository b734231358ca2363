"""The pure core: hardware facts, the quant catalog, the memory forecast and the plan."""
