import Testing
@testable import Leasehold
