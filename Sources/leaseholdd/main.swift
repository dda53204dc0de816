import LeaseholdDaemon

// The daemon with the built-in handlers (shell, log).
await LeaseholdDaemon.main()
