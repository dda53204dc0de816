print("LeaseholdBench: not built yet")
