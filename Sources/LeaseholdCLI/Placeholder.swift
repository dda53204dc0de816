enum LeaseholdCLIModule {}
