#include "qcow2/open.h"

namespace img::qcow2 {

Task<Result<std::unique_ptr<BlockDriver>>> open_qcow2(IoLoop&, std::unique_ptr<File>,
                                                      const OpenOptions&) {
  co_return not_supported("qcow2 driver: under construction");
}

}  // namespace img::qcow2
