import CLibYAML

enum LeaseholdModule { static let parserSize = MemoryLayout<yaml_parser_t>.size }
