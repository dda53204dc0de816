enum LeaseholdDaemonModule {}
