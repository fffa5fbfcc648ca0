// open_mapped: the chain's drivers and its description, opened together.
#include "mapped_image.h"

#include "common.h"

namespace imgcli {

img::Result<MappedImage> open_mapped(img::IoLoop& loop, const std::string& path,
                                     const std::string& fmt, bool force_share) {
  // The description first: it opens and closes each file, so an NBD server that takes one
  // client at a time (qemu-nbd's default -e 1) is not asked for a second connection.
  auto layers = loop.run(img::describe_chain(loop, path, fmt));
  if (!layers) return img::invalid_argument(open_error(path, layers.error()));
  auto drv = loop.run(
      img::open_image(loop, path, {.format = fmt, .read_only = true, .force_share = force_share}));
  if (!drv) return img::invalid_argument(open_error(path, drv.error()));
  auto mapper = img::ChainMapper::create(**drv, std::move(*layers));
  if (!mapper) return img::invalid_argument(open_error(path, mapper.error()));
  return MappedImage{std::move(*drv), std::move(*mapper)};
}

}  // namespace imgcli
