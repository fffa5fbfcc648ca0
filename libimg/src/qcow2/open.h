// Opening the qcow2 driver (used by image.cc's open_image).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "img/block_driver.h"
#include "img/file.h"
#include "img/image.h"
#include "img/qcow2.h"

namespace img::qcow2 {

Task<Result<std::unique_ptr<BlockDriver>>> open_qcow2(IoLoop& loop, std::unique_ptr<File> file,
                                                      const OpenOptions& opts);

// The backing file an open qcow2 image names (nullopt for other drivers or without one).
struct BackingRef {
  std::string name;
  std::string format;  // "" when the header records none
};
std::optional<BackingRef> backing_reference(const BlockDriver& d);
// Hands the opened backing image to a qcow2 driver (chain opening, libimg/src/chain).
void attach_backing(BlockDriver& d, std::unique_ptr<BlockDriver> backing);

// Qcow2Image::amend on d; kNotSupported if d is not a qcow2 driver.
Task<Status> amend_qcow2(BlockDriver& d, const Qcow2AmendOptions& o, const AmendProgress& progress);

}  // namespace img::qcow2
