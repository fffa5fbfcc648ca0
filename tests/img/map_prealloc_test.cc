// img map on images QEMU takes for metadata-preallocated (qcow2_detect_metadata_preallocation:
// clearly more clusters in use than blocks allocated in the file), where qemu-img map asks the
// file system about every data run and prints never-written clusters as "zero": true: the same
// output as qemu-img map, human and JSON, and the same where the guess says no.
#include "tool_test_util.h"

namespace imgtest {
namespace {

TEST(ImgMapPrealloc, MatchesQemuImgWhereQemuGuessesPreallocation) {
  REQUIRE_QEMU_IMG();
  REQUIRE_QEMU_IO();
  TempDir d;
  ASSERT_EQ(sh("qemu-img create -q -f qcow2 -o preallocation=metadata pm.qcow2 4M && "
               "qemu-io -c 'write -P 1 0 100k' -c 'write -P 2 2M 4k' pm.qcow2 && "
               "qemu-img create -q -f qcow2 -o preallocation=metadata,cluster_size=4k pm4.qcow2 "
               "1M && qemu-io -c 'write -P 3 5k 9k' pm4.qcow2 && "
               "qemu-img create -q -f qcow2 -o preallocation=falloc fa.qcow2 2M && "
               "qemu-io -c 'write -P 4 0 10k' fa.qcow2 && "
               // A bitmap's zero table clusters tip the guess over on a small image.
               "qemu-img create -q -f qcow2 bm.qcow2 4M && qemu-img bitmap --add bm.qcow2 b0 && "
               "qemu-io -c 'write -P 5 0 100k' bm.qcow2 && "
               "qemu-img create -q -f qcow2 -o data_file=bd.raw bd.qcow2 4M && "
               "qemu-img bitmap --add bd.qcow2 b0 && qemu-io -c 'write -P 6 0 100k' bd.qcow2 && "
               "qemu-img create -q -f qcow2 plain.qcow2 4M && "
               "qemu-io -c 'write -P 7 0 100k' plain.qcow2",
               d.path())
                .rc,
            0);
  for (const char* f :
       {"pm.qcow2", "pm4.qcow2", "fa.qcow2", "bm.qcow2", "bd.qcow2", "plain.qcow2"}) {
    for (const char* out : {"human", "json"}) {
      std::string args = std::string("map --output=") + out + " " + f;
      CmdResult mine = img(args, d.path());
      CmdResult ref = sh("qemu-img " + args, d.path());
      ASSERT_EQ(ref.rc, 0) << ref.err;
      EXPECT_EQ(mine.rc, 0) << mine.err;
      EXPECT_EQ(mine.out, ref.out) << args;
    }
  }
}

}  // namespace
}  // namespace imgtest
