// Included by path (not via pkg-config) so SwiftPM does not warn about -D_FILE_OFFSET_BITS=64.
#include <hiredis/hiredis.h>
