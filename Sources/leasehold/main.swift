print("leasehold: not built yet")
