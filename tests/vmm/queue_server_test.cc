// The shared queue server (virtio/queue_server.h) on its own, over fake guest memory: many
// concurrent requests on two queues completed out of order, injected handler failures, hostile
// chains, a broken ring, interrupt suppression, and reset with requests in flight (drained) and
// parked (cancelled), after which nothing writes guest memory.
#include "virtio/queue_server.h"

#include <gtest/gtest.h>
#include <poll.h>

#include <functional>
#include <random>
#include <set>
#include <thread>

#include "fake_ring.h"

namespace vmm::testing {
namespace {

using virtio::ChainHandler;
using virtio::DescriptorChain;
using virtio::QueueServer;

constexpr uint64_t kRing0 = 0x10000, kRing1 = 0x20000;
constexpr uint64_t kData = 0x100000;  // request slot s: 8 readable bytes at +16s, 8 writable +8

// The device under test: reads a u64 request number from the first (readable) descriptor and
// writes number * 3 into the last (writable) one. Modes inject delay, failures or parking.
class TestHandler : public ChainHandler {
 public:
  enum class Mode { kNow, kLater, kPark, kWaitFd };
  Mode mode = Mode::kNow;
  unsigned refuse_every = 0;  // refuse request numbers divisible by this (never 0 itself)
  std::atomic<uint64_t> handled{0};
  std::atomic<bool> stopping_called{false};
  std::vector<int> wait_fds;  // kWaitFd: request n waits until wait_fds[n - 1] is readable
  std::atomic<int> waits_ended_by_stop{0};
  QueueServer* server = nullptr;

  bool quiesce_waits = false;  // quiesce() waits for the chains in flight, as blk's does
  std::thread::id server_thread;

  void started(QueueServer& s) override {
    server = &s;
    server_thread = std::this_thread::get_id();
  }
  img::Task<img::Status> quiesce() override {
    if (quiesce_waits) co_await server->wait_idle();
    co_return img::Status{};
  }
  img::Status handle_chain(uint16_t queue, DescriptorChain chain) override {
    handled.fetch_add(1);
    if (chain.descs.size() != 2 || chain.descs[0].device_writable ||
        !chain.descs[1].device_writable || chain.descs[0].len < 8 || chain.descs[1].len < 8) {
      return img::invalid_argument("test request layout");
    }
    uint64_t n;
    std::memcpy(&n, chain.descs[0].host, 8);
    if (refuse_every && n % refuse_every == 0) return img::io_error(EIO, "injected failure");
    if (mode == Mode::kPark) {
      parked.push_back(chain.head);
      return {};
    }
    if (mode == Mode::kWaitFd) {
      server->loop().spawn(wait_then_finish(queue, std::move(chain), n));
      return {};
    }
    if (mode == Mode::kNow) {
      finish(queue, chain, n);
      return {};
    }
    server->loop().spawn(later(queue, std::move(chain), n, rng() % 4));
    return {};
  }
  void stopping() override {
    stopping_called = true;
    parked.clear();
  }

 private:
  void finish(uint16_t queue, const DescriptorChain& c, uint64_t n) {
    uint64_t v = n * 3;
    std::memcpy(c.descs[1].host, &v, 8);
    server->complete(queue, c.head, 8);
  }
  img::Task<void> later(uint16_t queue, DescriptorChain c, uint64_t n, unsigned how) {
    // Out of order: some after a few loop turns, some after a real sleep (io_uring / poll).
    if (how == 3) {
      (void)co_await server->sleep_for(std::chrono::microseconds(200 + n % 500));
    } else {
      for (unsigned i = 0; i < how * 3; ++i) co_await server->loop().yield();
    }
    finish(queue, c, n);
  }
  img::Task<void> wait_then_finish(uint16_t queue, DescriptorChain c, uint64_t n) {
    // Not `if (co_await ...)`: gcc 12 miscompiles a co_await inside a condition (it skipped the
    // await entirely here).
    bool ready = co_await server->wait(wait_fds[n - 1], POLLIN);
    if (ready) {
      finish(queue, c, n);
    } else {
      waits_ended_by_stop.fetch_add(1);
    }
  }
  std::mt19937 rng{42};
  std::vector<uint16_t> parked;
};

struct QueueServerTest : ::testing::Test {
  GuestRam ram{16 << 20};
  CountingInterrupt irq;
  TestHandler handler;
  std::unique_ptr<img::IoLoop> loop = *img::IoLoop::create();
  std::vector<int> fds;
  ~QueueServerTest() override {
    server.reset();
    for (int fd : fds) close(fd);
  }
  std::unique_ptr<QueueServer> server;

  void start(std::vector<FakeRing*> rings, bool event_idx = false, bool indirect = true) {
    std::vector<virtio::ActiveQueue> qs;
    for (size_t i = 0; i < rings.size(); ++i) {
      qs.push_back(
          active_queue(ram.mem(), *rings[i], static_cast<uint16_t>(i), event_idx, indirect));
      fds.push_back(qs.back().kick_fd);
    }
    server = std::make_unique<QueueServer>("test", *loop, std::move(qs), irq, handler);
    ASSERT_TRUE(server->start());
  }
  // A two-descriptor request at descriptors (2s, 2s+1) carrying number n.
  uint16_t post(FakeRing& r, uint16_t s, uint64_t n, uint64_t data = kData) {
    uint64_t at = data + 16ull * s;
    ram.put<uint64_t>(at, n);
    ram.put<uint64_t>(at + 8, 0);
    r.write_desc(2 * s, at, 8, virtio::kDescFNext, 2 * s + 1);
    r.write_desc(2 * s + 1, at + 8, 8, virtio::kDescFWrite, 0);
    r.make_available(2 * s);
    return 2 * s;
  }
};

TEST_F(QueueServerTest, ManyConcurrentRequestsOnTwoQueuesCompleteExactlyOnceWithInjectedFailures) {
  FakeRing r0(ram, kRing0, 64), r1(ram, kRing1, 64);
  handler.mode = TestHandler::Mode::kLater;
  handler.refuse_every = 7;
  start({&r0, &r1});
  constexpr uint64_t kPerQueue = 3000;
  FakeRing* rings[2] = {&r0, &r1};
  uint64_t next[2] = {1, 1}, done[2] = {0, 0};
  uint16_t seen_used[2] = {0, 0};
  std::vector<uint64_t> slot_req[2] = {std::vector<uint64_t>(32, 0), std::vector<uint64_t>(32, 0)};
  std::vector<uint16_t> free_slots[2];
  for (int q = 0; q < 2; ++q)
    for (uint16_t s = 0; s < 32; ++s) free_slots[q].push_back(s);
  uint64_t failures = 0;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while ((done[0] < kPerQueue || done[1] < kPerQueue) &&
         std::chrono::steady_clock::now() < deadline) {
    for (int q = 0; q < 2; ++q) {
      FakeRing& r = *rings[q];
      bool posted = false;
      while (!free_slots[q].empty() && next[q] <= kPerQueue) {
        uint16_t s = free_slots[q].back();
        free_slots[q].pop_back();
        slot_req[q][s] = next[q];
        post(r, s, next[q]++, kData + q * 0x10000);
        posted = true;
      }
      if (posted) kick(fds[q]);
      uint16_t now = r.used_idx();
      for (; seen_used[q] != now; ++seen_used[q]) {
        auto [id, len] = r.used_elem(seen_used[q]);
        ASSERT_EQ(id % 2, 0u);
        uint16_t s = static_cast<uint16_t>(id / 2);
        ASSERT_LT(s, 32);
        uint64_t n = slot_req[q][s];
        ASSERT_NE(n, 0u) << "slot " << s << " completed twice";
        uint64_t got = ram.get<uint64_t>(kData + q * 0x10000 + 16ull * s + 8);
        if (n % 7 == 0) {
          EXPECT_EQ(len, 0u) << "refused request " << n;
          EXPECT_EQ(got, 0u) << "refused request " << n << " wrote its buffer";
          ++failures;
        } else {
          EXPECT_EQ(len, 8u);
          EXPECT_EQ(got, n * 3) << "request " << n;
        }
        slot_req[q][s] = 0;
        free_slots[q].push_back(s);
        ++done[q];
      }
    }
    std::this_thread::yield();
  }
  EXPECT_EQ(done[0], kPerQueue);
  EXPECT_EQ(done[1], kPerQueue);
  EXPECT_EQ(failures, 2 * (kPerQueue / 7));
  EXPECT_EQ(handler.handled.load(), 2 * kPerQueue);
  // One interrupt per batch at most: some, never more than completions.
  for (int q = 0; q < 2; ++q) {
    EXPECT_GT(irq.used[q].load(), 0u);
    EXPECT_LE(irq.used[q].load(), kPerQueue);
  }
  server->stop();
  EXPECT_EQ(server->in_flight(), 0u);
  EXPECT_EQ(irq.error_count(), 0u);
}

TEST_F(QueueServerTest, HostileChainsAreReturnedEmptyAndTheQueueKeepsServing) {
  FakeRing r(ram, kRing0, 16);
  start({&r}, false, /*indirect=*/true);
  const uint64_t outside = ram.size() + 0x1000;
  const uint64_t ind = 0x80000;  // an indirect table
  struct Case {
    const char* what;
    std::function<uint16_t()> build;
  };
  std::vector<Case> cases = {
      {"descriptor loop",
       [&] {
         r.write_desc(0, kData, 8, virtio::kDescFNext, 1);
         r.write_desc(1, kData + 8, 8, virtio::kDescFNext, 0);
         return uint16_t{0};
       }},
      {"address outside guest memory",
       [&] {
         r.write_desc(2, outside, 8, 0, 0);
         return uint16_t{2};
       }},
      {"huge length",
       [&] {
         r.write_desc(3, kData, 0xffffffffu, virtio::kDescFWrite, 0);
         return uint16_t{3};
       }},
      {"address + length wraps",
       [&] {
         r.write_desc(4, ~0ull - 3, 16, 0, 0);
         return uint16_t{4};
       }},
      {"readable after writable",
       [&] {
         r.write_desc(5, kData, 8, virtio::kDescFNext | virtio::kDescFWrite, 6);
         r.write_desc(6, kData + 8, 8, 0, 0);
         return uint16_t{5};
       }},
      {"next out of range",
       [&] {
         r.write_desc(7, kData, 8, virtio::kDescFNext, 200);
         return uint16_t{7};
       }},
      {"indirect table of bad length",
       [&] {
         r.write_desc(8, ind, 17, virtio::kDescFIndirect, 0);
         return uint16_t{8};
       }},
      {"indirect table outside memory",
       [&] {
         r.write_desc(9, outside, 32, virtio::kDescFIndirect, 0);
         return uint16_t{9};
       }},
      {"nested indirect",
       [&] {
         ram.put<uint64_t>(ind, ind);
         ram.put<uint32_t>(ind + 8, 16);
         ram.put<uint16_t>(ind + 12, virtio::kDescFIndirect);
         r.write_desc(10, ind, 16, virtio::kDescFIndirect, 0);
         return uint16_t{10};
       }},
      {"indirect with NEXT",
       [&] {
         r.write_desc(11, ind, 16, virtio::kDescFIndirect | virtio::kDescFNext, 12);
         return uint16_t{11};
       }},
      {"indirect loop",
       [&] {
         for (uint16_t i = 0; i < 4; ++i) {
           uint64_t d = ind + 0x100 + 16 * i;
           ram.put<uint64_t>(d, kData);
           ram.put<uint32_t>(d + 8, 8);
           ram.put<uint16_t>(d + 12, virtio::kDescFNext);
           ram.put<uint16_t>(d + 14, static_cast<uint16_t>((i + 1) % 4));
         }
         r.write_desc(12, ind + 0x100, 64, virtio::kDescFIndirect, 0);
         return uint16_t{12};
       }},
  };
  for (auto& c : cases) r.make_available(c.build());
  kick(fds[0]);
  ASSERT_TRUE(wait_for([&] { return r.used_idx() == cases.size(); }));
  for (uint16_t i = 0; i < cases.size(); ++i) {
    EXPECT_EQ(r.used_elem(i).second, 0u) << cases[i].what;
  }
  EXPECT_EQ(handler.handled.load(), 0u) << "an invalid chain reached the device";
  // A zero-length descriptor is not a transport error: the device decides (here: refused).
  r.write_desc(13, kData, 0, 0, 0);
  r.make_available(13);
  // And a good request after all that is served.
  ram.put<uint64_t>(kData + 0x200, 5);
  r.write_desc(14, kData + 0x200, 8, virtio::kDescFNext, 15);
  r.write_desc(15, kData + 0x208, 8, virtio::kDescFWrite, 0);
  r.make_available(14);
  kick(fds[0]);
  ASSERT_TRUE(wait_for([&] { return r.used_idx() == cases.size() + 2; }));
  EXPECT_EQ(r.used_elem(static_cast<uint16_t>(cases.size())).second, 0u);
  EXPECT_EQ(r.used_elem(static_cast<uint16_t>(cases.size() + 1)).second, 8u);
  EXPECT_EQ(ram.get<uint64_t>(kData + 0x208), 15u);
  EXPECT_EQ(irq.error_count(), 0u) << "a bad chain is not a broken ring";
}

TEST_F(QueueServerTest, IndirectChainIsServedAndRefusedWhenNotNegotiated) {
  FakeRing r(ram, kRing0, 8);
  start({&r}, false, /*indirect=*/false);
  uint64_t ind = 0x80000;
  ram.put<uint64_t>(kData, 9);
  ram.put<uint64_t>(ind, kData);
  ram.put<uint32_t>(ind + 8, 8);
  ram.put<uint16_t>(ind + 12, virtio::kDescFNext);
  ram.put<uint16_t>(ind + 14, 1);
  ram.put<uint64_t>(ind + 16, kData + 8);
  ram.put<uint32_t>(ind + 24, 8);
  ram.put<uint16_t>(ind + 28, virtio::kDescFWrite);
  r.write_desc(0, ind, 32, virtio::kDescFIndirect, 0);
  r.make_available(0);
  kick(fds[0]);
  ASSERT_TRUE(wait_for([&] { return r.used_idx() == 1; }));
  EXPECT_EQ(r.used_elem(0).second, 0u);
  EXPECT_EQ(handler.handled.load(), 0u);
}

TEST_F(QueueServerTest, IndirectChainIsServedWhenNegotiated) {
  FakeRing r(ram, kRing0, 8);
  start({&r}, false, /*indirect=*/true);
  uint64_t ind = 0x80000;
  ram.put<uint64_t>(kData, 9);
  ram.put<uint64_t>(ind, kData);
  ram.put<uint32_t>(ind + 8, 8);
  ram.put<uint16_t>(ind + 12, virtio::kDescFNext);
  ram.put<uint16_t>(ind + 14, 1);
  ram.put<uint64_t>(ind + 16, kData + 8);
  ram.put<uint32_t>(ind + 24, 8);
  ram.put<uint16_t>(ind + 28, virtio::kDescFWrite);
  r.write_desc(0, ind, 32, virtio::kDescFIndirect, 0);
  r.make_available(0);
  kick(fds[0]);
  ASSERT_TRUE(wait_for([&] { return r.used_idx() == 1; }));
  EXPECT_EQ(r.used_elem(0).second, 8u);
  EXPECT_EQ(ram.get<uint64_t>(kData + 8), 27u);
}

TEST_F(QueueServerTest, BrokenAvailRingAsksForResetAndStopsTheQueue) {
  FakeRing r(ram, kRing0, 8);
  start({&r});
  r.set_avail_idx(9);  // 9 ahead of 0 on a queue of 8
  kick(fds[0]);
  ASSERT_TRUE(wait_for([&] { return irq.error_count() == 1; }));
  EXPECT_NE(irq.errors[0].find("avail index"), std::string::npos) << irq.errors[0];
  EXPECT_EQ(handler.handled.load(), 0u);
  EXPECT_EQ(r.used_idx(), 0);
}

TEST_F(QueueServerTest, BufferMadeAvailableBeforeStartIsServedWithoutAKick) {
  FakeRing r(ram, kRing0, 8);
  post(r, 0, 4);
  start({&r});
  ASSERT_TRUE(wait_for([&] { return r.used_idx() == 1; }));
  EXPECT_EQ(ram.get<uint64_t>(kData + 8), 12u);
}

TEST_F(QueueServerTest, NoInterruptFlagAndEventIdxSuppressInterrupts) {
  FakeRing r0(ram, kRing0, 16), r1(ram, kRing1, 16);
  r0.set_avail_flags(virtio::kAvailFNoInterrupt);  // queue 0: no EVENT_IDX, flag set
  r1.set_used_event(1000);                         // queue 1: EVENT_IDX, event far ahead
  std::vector<virtio::ActiveQueue> qs;
  qs.push_back(active_queue(ram.mem(), r0, 0, false, true));
  qs.push_back(active_queue(ram.mem(), r1, 1, true, true));
  fds = {qs[0].kick_fd, qs[1].kick_fd};
  server = std::make_unique<QueueServer>("test", *loop, std::move(qs), irq, handler);
  ASSERT_TRUE(server->start());
  for (uint16_t i = 0; i < 6; ++i) {
    post(r0, i, i + 1);
    post(r1, i, i + 1, kData + 0x10000);
    kick(fds[0]);
    kick(fds[1]);
    ASSERT_TRUE(wait_for([&] { return r0.used_idx() == i + 1 && r1.used_idx() == i + 1; }));
  }
  EXPECT_EQ(irq.used[0].load(), 0u);
  EXPECT_EQ(irq.used[1].load(), 0u);
  // EVENT_IDX: the driver asks for an interrupt at used index 6 (§2.7.10): the 7th completion.
  r1.set_used_event(6);
  post(r1, 6, 7, kData + 0x10000);
  kick(fds[1]);
  ASSERT_TRUE(wait_for([&] { return irq.used[1].load() == 1; }));
}

TEST_F(QueueServerTest, ResetDrainsRequestsInFlightThenNothingWritesGuestMemory) {
  FakeRing r(ram, kRing0, 64);
  handler.mode = TestHandler::Mode::kLater;
  start({&r});
  for (uint16_t s = 0; s < 32; ++s) post(r, s, s + 1);
  kick(fds[0]);
  ASSERT_TRUE(wait_for([&] { return handler.handled.load() == 32; }));
  server->stop();  // some are still sleeping or yielding: stop waits for them
  EXPECT_EQ(r.used_idx(), 32);
  EXPECT_EQ(server->in_flight(), 0u);
  EXPECT_TRUE(handler.stopping_called.load());
  // After stop: new buffers and kicks are not looked at.
  std::vector<uint8_t> before(ram.at(kRing0), ram.at(kRing0) + 0x3000);
  for (uint16_t s = 0; s < 8; ++s) post(r, s, 100 + s, kData + 0x8000);
  kick(fds[0]);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(r.used_idx(), 32);
  EXPECT_EQ(std::memcmp(before.data() + 0x2000, ram.at(kRing0 + 0x2000), 0x1000), 0)
      << "used ring written after stop";
  for (uint16_t s = 0; s < 8; ++s) EXPECT_EQ(ram.get<uint64_t>(kData + 0x8000 + 16 * s + 8), 0u);
}

TEST_F(QueueServerTest, ResetCancelsParkedChainsPromptly) {
  FakeRing r(ram, kRing0, 16);
  handler.mode = TestHandler::Mode::kPark;
  start({&r});
  for (uint16_t s = 0; s < 8; ++s) post(r, s, s + 1);
  kick(fds[0]);
  ASSERT_TRUE(wait_for([&] { return handler.handled.load() == 8; }));
  auto t0 = std::chrono::steady_clock::now();
  server->stop();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_TRUE(handler.stopping_called.load());
  EXPECT_EQ(r.used_idx(), 0) << "parked chains are dropped, not completed";
}

TEST_F(QueueServerTest, AWaitOnAnIdleDescriptorEndsAtStopAndAReadyOneCompletes) {
  FakeRing r(ram, kRing0, 8);
  int idle[2], ready[2];
  ASSERT_EQ(pipe(idle), 0);
  ASSERT_EQ(pipe(ready), 0);
  handler.mode = TestHandler::Mode::kWaitFd;
  handler.wait_fds = {idle[0], ready[0]};
  start({&r});
  post(r, 0, 1);
  post(r, 1, 2);
  kick(fds[0]);
  ASSERT_TRUE(wait_for([&] { return handler.handled.load() == 2; }));
  ASSERT_EQ(write(ready[1], "x", 1), 1);
  ASSERT_TRUE(wait_for([&] { return r.used_idx() == 1; }));
  EXPECT_EQ(r.used_elem(0).first, 2u);  // the chain that waited on the ready pipe
  auto t0 = std::chrono::steady_clock::now();
  server->stop();  // the other still waits on a pipe nobody writes
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
  EXPECT_EQ(handler.waits_ended_by_stop.load(), 1);
  EXPECT_EQ(r.used_idx(), 1);
  for (int fd : {idle[0], idle[1], ready[0], ready[1]}) close(fd);
}

// run_quiesced (a disk resize): the operation runs on the server thread only once every chain in
// flight has completed, returns its status to the caller, and the queues serve again afterwards;
// on a paused server it runs at once and the server stays paused; after stop it is refused.
TEST_F(QueueServerTest, AQuiescedOperationWaitsForTheChainsInFlightAndRunsOnTheServerThread) {
  FakeRing r(ram, kRing0, 64);
  constexpr int kN = 16;
  std::vector<int> pipes;
  for (int i = 0; i < kN; ++i) {
    int p[2];
    ASSERT_EQ(pipe(p), 0);
    handler.wait_fds.push_back(p[0]);
    pipes.push_back(p[0]);
    pipes.push_back(p[1]);
  }
  handler.mode = TestHandler::Mode::kWaitFd;
  handler.quiesce_waits = true;
  start({&r});
  for (uint16_t s = 0; s < kN; ++s) post(r, s, s + 1);
  kick(fds[0]);
  ASSERT_TRUE(wait_for([&] { return handler.handled.load() == kN; }));

  std::atomic<bool> ran{false};
  size_t in_flight_seen = 99;
  std::thread::id ran_on;
  img::Status result;
  std::thread caller([&] {
    result = server->run_quiesced([&]() -> img::Task<img::Status> {
      in_flight_seen = server->in_flight();
      ran_on = std::this_thread::get_id();
      co_await server->loop().yield();  // a real coroutine: it may wait on the loop
      ran = true;
      co_return img::make_error(img::ErrorCode::kNoSpace, "injected");
    });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(ran.load()) << "ran with " << kN << " chains in flight";
  for (int i = 0; i < kN; ++i) ASSERT_EQ(write(pipes[2 * i + 1], "x", 1), 1);  // let them end
  caller.join();
  EXPECT_TRUE(ran.load());
  EXPECT_EQ(in_flight_seen, 0u);
  EXPECT_EQ(ran_on, handler.server_thread);
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().message(), "injected");
  EXPECT_EQ(r.used_idx(), kN);
  EXPECT_FALSE(server->paused());

  // Served again: a new chain completes.
  handler.mode = TestHandler::Mode::kNow;
  post(r, 20, 21);
  kick(fds[0]);
  ASSERT_TRUE(wait_for([&] { return r.used_idx() == kN + 1; }));

  // Paused before: runs while paused and leaves it paused; a chain posted meanwhile waits.
  ASSERT_TRUE(server->pause());
  post(r, 21, 22);
  kick(fds[0]);
  bool ran_paused = false;
  EXPECT_TRUE(server->run_quiesced([&]() -> img::Task<img::Status> {
    ran_paused = true;
    co_return img::Status{};
  }));
  EXPECT_TRUE(ran_paused);
  EXPECT_TRUE(server->paused());
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(r.used_idx(), kN + 1);
  server->resume();
  ASSERT_TRUE(wait_for([&] { return r.used_idx() == kN + 2; }));

  server->stop();
  bool ran_stopped = false;
  img::Status s = server->run_quiesced([&]() -> img::Task<img::Status> {
    ran_stopped = true;
    co_return img::Status{};
  });
  EXPECT_FALSE(s);
  EXPECT_FALSE(ran_stopped);
  for (int fd : pipes) close(fd);
}

}  // namespace
}  // namespace vmm::testing
