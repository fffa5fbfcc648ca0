// Hostile backing chains on real files, made by patching images qemu-img created: loops (through
// another image, to itself, through a symlink), chains deeper than the limit, backing names
// outside the first cluster or absurdly long, names of missing files and of folders. Each is
// refused with an error naming the problem (and, for chain errors, the chain), never a crash, a
// hang or a huge allocation; qemu-img refuses the malformed headers too.
#include <filesystem>
#include <fstream>

#include "chain_interop.h"
#include "img/bytes.h"

namespace img {
namespace {

using test::qemu_ok;
using test::shell_quote;

// Header fields (qcow2.rst "Header"): backing_file_offset (8 bytes) at 8, backing_file_size
// (4 bytes) at 16.
void patch_backing(const std::string& path, uint64_t name_offset, const std::string& name,
                   uint32_t size_field) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << path;
  uint8_t hdr[12];
  store_be64(hdr, name_offset);
  store_be32(hdr + 8, size_field);
  f.seekp(8);
  f.write(reinterpret_cast<const char*>(hdr), sizeof hdr);
  if (!name.empty()) {
    f.seekp(static_cast<std::streamoff>(name_offset));
    f.write(name.data(), static_cast<std::streamsize>(name.size()));
  }
  ASSERT_TRUE(f.good()) << path;
}

class HostileChain : public ::testing::Test {
 protected:
  void SetUp() override { SKIP_WITHOUT_QEMU_TOOLS(); }
  // An image naming `backing` without qemu-img opening it (-u).
  void create(const std::string& name, const std::string& backing, uint64_t size = 1 << 20) {
    std::string cmd = "qemu-img create -q -f qcow2 ";
    if (!backing.empty()) cmd += "-u -b " + shell_quote(backing) + " -F qcow2 ";
    qemu_ok(cmd + shell_quote(dir_.file(name)) + " " + std::to_string(size));
  }
  // The error opening `name` with its chain; fails the test if it opens.
  std::string open_error(const std::string& name, OpenOptions o = {}) {
    auto d = loop_->run(open_image(*loop_, dir_.file(name), o));
    EXPECT_FALSE(d.has_value()) << name << " opened";
    if (d) {
      (void)loop_->run((*d)->close());
      return "";
    }
    return d.error().to_string();
  }

  test::TempDir dir_;
  std::unique_ptr<IoLoop> loop_ = test::make_loop();
};

TEST_F(HostileChain, LoopThroughAnotherImageIsRefusedWithTheChain) {
  create("a.qcow2", "b.qcow2");
  create("b.qcow2", "a.qcow2");
  std::string e = open_error("a.qcow2");
  EXPECT_NE(e.find("backing chain has a loop"), std::string::npos) << e;
  std::string a = dir_.file("a.qcow2"), b = dir_.file("b.qcow2");
  EXPECT_NE(e.find(a + " -> " + b + " -> " + a), std::string::npos) << e;
}

TEST_F(HostileChain, ImageNamingItselfIsRefused) {
  create("a.qcow2", "x.qcow2");  // a name as long as its own, patched in place
  uint8_t hdr[20];
  std::ifstream(dir_.file("a.qcow2"), std::ios::binary).read(reinterpret_cast<char*>(hdr), 20);
  patch_backing(dir_.file("a.qcow2"), load_be64(hdr + 8), "a.qcow2", 7);
  std::string e = open_error("a.qcow2");
  EXPECT_NE(e.find("backing chain has a loop"), std::string::npos) << e;
}

TEST_F(HostileChain, LoopThroughASymlinkIsFoundByIdentity) {
  create("a.qcow2", "link.qcow2");
  std::filesystem::create_symlink("a.qcow2", dir_.file("link.qcow2"));
  std::string e = open_error("a.qcow2");
  EXPECT_NE(e.find("backing chain has a loop"), std::string::npos) << e;
}

TEST_F(HostileChain, ChainOf70IsRefusedAnd64BelowTheTopOpens) {
  create("l0.qcow2", "");
  test::qemu_io("qcow2", dir_.file("l0.qcow2"), {"write -P 0x5a 4096 8192"});
  for (int i = 1; i <= 70; ++i) {
    create("l" + std::to_string(i) + ".qcow2", "l" + std::to_string(i - 1) + ".qcow2");
  }
  std::string e = open_error("l70.qcow2");
  EXPECT_NE(e.find("backing chain is deeper than 64 images"), std::string::npos) << e;
  EXPECT_NE(e.find("l70.qcow2 -> "), std::string::npos) << e;
  // The limit counts images below the top: 64 of them is allowed, and reads the base's data.
  auto want = test::qemu_flat(dir_.file("l64.qcow2"), dir_.file("flat.raw"));
  EXPECT_SAME_BYTES(test::libimg_flat(*loop_, dir_.file("l64.qcow2")), want, "l64");
  EXPECT_EQ(want[4096], 0x5a);
  std::string e65 = open_error("l65.qcow2");
  EXPECT_NE(e65.find("deeper than 64"), std::string::npos) << e65;
  // A smaller limit from the caller holds too.
  std::string e5 = open_error("l6.qcow2", {.max_chain_depth = 5});
  EXPECT_NE(e5.find("deeper than 5 images"), std::string::npos) << e5;
}

TEST_F(HostileChain, BackingNameOutsideTheFirstClusterIsRefused) {
  create("a.qcow2", "base.qcow2");
  create("base.qcow2", "");
  // Starts inside cluster 0 but runs past it; and one that starts far past it.
  for (uint64_t off : {65536ull - 4, 65536ull, 1ull << 40, ~0ull - 3}) {
    SCOPED_TRACE(off);
    patch_backing(dir_.file("a.qcow2"), off, "", 16);
    std::string e = open_error("a.qcow2");
    EXPECT_NE(e.find("backing_file_offset"), std::string::npos) << e;
    EXPECT_NE(test::run_tool("qemu-img info " + shell_quote(dir_.file("a.qcow2"))).exit_code, 0);
  }
}

TEST_F(HostileChain, AbsurdlyLongBackingNameIsRefused) {
  create("a.qcow2", "base.qcow2");
  patch_backing(dir_.file("a.qcow2"), 4096, std::string(2000, 'n'), 2000);
  std::string e = open_error("a.qcow2");
  EXPECT_NE(e.find("backing_file_size 2000"), std::string::npos) << e;
  EXPECT_NE(test::run_tool("qemu-img info " + shell_quote(dir_.file("a.qcow2"))).exit_code, 0);
  // The size field alone claiming 4 GiB (no such name in the file) is refused the same way.
  patch_backing(dir_.file("a.qcow2"), 4096, "", 0xffffffffu);
  e = open_error("a.qcow2");
  EXPECT_NE(e.find("backing_file_size 4294967295"), std::string::npos) << e;
}

TEST_F(HostileChain, MissingBackingFileIsNamedWithTheChain) {
  create("mid.qcow2", "sub/missing.qcow2");
  create("top.qcow2", "mid.qcow2");
  std::string e = open_error("top.qcow2");
  EXPECT_NE(e.find("could not open backing file '" + dir_.file("sub/missing.qcow2") + "'"),
            std::string::npos)
      << e;
  EXPECT_NE(e.find("No such file or directory"), std::string::npos) << e;
  EXPECT_NE(e.find(dir_.file("top.qcow2") + " -> " + dir_.file("mid.qcow2") + " -> "),
            std::string::npos)
      << e;
}

TEST_F(HostileChain, BackingFileThatIsAFolderIsRefused) {
  std::filesystem::create_directories(dir_.file("folder"));
  create("a.qcow2", "folder");
  std::string e = open_error("a.qcow2");
  EXPECT_NE(e.find(dir_.file("folder")), std::string::npos) << e;
}

// Regression: an error opening a backing file's image (its format, its header) came back bare,
// without naming the backing file or the chain ("unknown image format 'vmdk'" for the top's
// name), so a user could not tell which of the chain's files was at fault.
TEST_F(HostileChain, BackingOpenErrorNamesTheBackingFileAndChain) {
  test::qemu_ok("qemu-img create -q -f qcow2 -u -b x.vmdk -F vmdk " +
                shell_quote(dir_.file("a.qcow2")) + " 1M");
  std::ofstream(dir_.file("x.vmdk")) << "not a disk";
  std::string e = open_error("a.qcow2");
  EXPECT_NE(e.find("unknown image format 'vmdk'"), std::string::npos) << e;
  EXPECT_NE(e.find("backing file '" + dir_.file("x.vmdk") + "'"), std::string::npos) << e;
  EXPECT_NE(e.find(dir_.file("a.qcow2") + " -> " + dir_.file("x.vmdk")), std::string::npos) << e;

  // A corrupt header two levels down is named, with the chain, once.
  create("base.qcow2", "");
  std::fstream f(dir_.file("base.qcow2"), std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(20);  // cluster_bits
  f.write("\xff\xff", 2);
  f.close();
  create("mid.qcow2", "base.qcow2");
  create("top.qcow2", "mid.qcow2");
  e = open_error("top.qcow2");
  EXPECT_NE(e.find("cluster_bits"), std::string::npos) << e;
  std::string chain =
      dir_.file("top.qcow2") + " -> " + dir_.file("mid.qcow2") + " -> " + dir_.file("base.qcow2");
  EXPECT_NE(e.find("backing file '" + dir_.file("base.qcow2") + "' (chain: " + chain + ")"),
            std::string::npos)
      << e;
  EXPECT_EQ(e.find("backing file '" + dir_.file("mid.qcow2") + "'"), std::string::npos) << e;
}

}  // namespace
}  // namespace img
