import LeaseholdCLI

await LeaseholdTool.main()
