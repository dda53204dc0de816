enum LeaseholdTestSupportModule {}
