// A vmm disk holds QEMU's image lock while the device lives (docs/img.md, "Locking"): img,
// qemu-img and a second disk are kept off a disk the guest writes, as a running QEMU keeps
// them off; readonly=on takes read locks only; closing the device drops them.
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "../libimg/lock_probe.h"
#include "img/ops.h"
#include "virtio_rig.h"

namespace vmm {
namespace {

using testing::Rig;
using testing::temp_path;
using V = std::vector<int>;

std::string make_qcow2(const std::string& name) {
  std::string p = temp_path(name);
  auto loop = img::IoLoop::create();
  if (!loop || !(*loop)->run(img::create_image(**loop, p, "qcow2", 1 << 20, {}))) return "";
  return p;
}

bool have_qemu_img() { return std::system("qemu-img --version >/dev/null 2>&1") == 0; }

TEST(BlkLock, AWrittenDiskIsLockedAsQemuLocksIt) {
  std::string path = make_qcow2("blk_lock_rw.qcow2");
  ASSERT_FALSE(path.empty());
  {
    Rig vm(BlkConfig{.path = path, .format = "qcow2", .serial = "a"});
    ASSERT_TRUE(vm.ok()) << vm.error;
    EXPECT_EQ(img::test::held_lock_bytes(path), (V{100, 101, 103, 201, 203}));
    Rig second(BlkConfig{.path = path, .format = "qcow2", .serial = "b"});
    EXPECT_FALSE(second.ok());
    EXPECT_NE(second.error.find("Failed to get \"write\" lock"), std::string::npos)
        << second.error;
    if (have_qemu_img()) {
      // qemu-img info refuses without -U and reads with it, exactly as beside a running QEMU.
      EXPECT_NE(std::system(("qemu-img info '" + path + "' >/dev/null 2>&1").c_str()), 0);
      EXPECT_EQ(std::system(("qemu-img info -U '" + path + "' >/dev/null 2>&1").c_str()), 0);
    }
  }
  EXPECT_EQ(img::test::held_lock_bytes(path), V{});
  unlink(path.c_str());
}

TEST(BlkLock, AReadOnlyDiskTakesReadLocks) {
  std::string path = make_qcow2("blk_lock_ro.qcow2");
  ASSERT_FALSE(path.empty());
  Rig vm(BlkConfig{.path = path, .format = "qcow2", .read_only = true, .serial = "a"});
  ASSERT_TRUE(vm.ok()) << vm.error;
  EXPECT_EQ(img::test::held_lock_bytes(path), (V{100, 201, 203}));
  // A second read-only disk on it shares; a writer does not.
  Rig reader(BlkConfig{.path = path, .format = "qcow2", .read_only = true, .serial = "b"});
  EXPECT_TRUE(reader.ok()) << reader.error;
  Rig writer(BlkConfig{.path = path, .format = "qcow2", .serial = "c"});
  EXPECT_FALSE(writer.ok());
  unlink(path.c_str());
}

}  // namespace
}  // namespace vmm
