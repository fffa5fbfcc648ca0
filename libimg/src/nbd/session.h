// An NBD server session: one client, from the greeting through option haggling (handshake.cc)
// to the transmission phase (transmission.cc), serving one export over a BlockDriver. The byte
// stream is a Conn, so the same code runs on a socket (socket_conn.h), in the unit tests and in
// the fuzz target (over bytes in memory).
//
// Hostile clients are expected: every option and request is checked (proto.h) before anything
// is allocated or read for it, option haggling is bounded (kMaxOptions, kMaxOptionLength), and a
// connection holds at most kMaxInFlight requests and kMaxBytesInFlight of buffers at once; past
// that it stops reading from the client until replies have gone out. A slow client therefore
// only slows itself: nothing here blocks the loop.
//
// Thread-safety: one IoLoop thread; several sessions may share one export (and driver).
#pragma once

#include <sys/uio.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>

#include "img/block_driver.h"
#include "img/block_map.h"
#include "img/io_loop.h"
#include "img/status.h"
#include "img/task.h"

namespace img::nbd {

// A reliable byte stream to one client.
class Conn {
 public:
  virtual ~Conn() = default;
  // Reads exactly len bytes; an error at end of stream or on failure.
  virtual Task<Status> read_exact(void* buf, size_t len) = 0;
  // Writes all of iov (in order, not interleaved with another write_all).
  virtual Task<Status> write_all(std::span<const iovec> iov) = 0;
  // Ends the stream: reads and writes in progress and later fail. Idempotent.
  virtual void close() = 0;
};

// The status of [off, off+len) through the export's chain, one run from off (ChainMapper's).
using StatusFn = std::function<Task<Result<ChainStatus>>(uint64_t off, uint64_t len)>;

// A StatusFn from the drivers alone, following backing() where the top says kBacking: for
// images that are not host files (tests, the fuzz target). The tool uses a ChainMapper.
StatusFn driver_status_fn(BlockDriver& drv);

enum class DetectZeroes { kOff, kOn, kUnmap };

struct ExportConfig {
  std::string name;         // -x (qemu-nbd's default is "")
  std::string description;  // -D
  BlockDriver* driver = nullptr;
  StatusFn status;
  bool read_only = false;         // -r (or a driver opened read-only)
  bool allocation_depth = false;  // -A: offer qemu:allocation-depth
  bool discard_unmap = false;     // --discard=unmap: TRIM and zero writes may free space
  DetectZeroes detect_zeroes = DetectZeroes::kOff;
  // Several clients may write at once and see each other's flushed writes: they share this one
  // driver (one cache), and a flush on any connection flushes it all. qemu-nbd offers it with
  // -e greater than 1, or when read-only.
  bool multi_conn = false;
};

// Bounds on one client.
constexpr unsigned kMaxOptions = 1024;
constexpr unsigned kMaxInFlight = 64;
constexpr uint64_t kMaxBytesInFlight = 96u << 20;

// What the handshake settled.
struct Negotiated {
  bool aborted = false;  // NBD_OPT_ABORT: the client left politely, nothing to transmit
  bool structured = false;
  bool base_allocation = false;
  bool allocation_depth = false;
  uint16_t tx_flags = 0;
};

// The transmission flags the export advertises (proto.md "Transmission flags").
uint16_t transmission_flags(const ExportConfig& exp, bool structured);

// Option haggling from the greeting on. Ok with the result when the client chose the export
// (NBD_OPT_GO or NBD_OPT_EXPORT_NAME) or aborted; an error when it went away or misbehaved
// beyond recovery (the message says which).
Task<Result<Negotiated>> negotiate(Conn& conn, const ExportConfig& exp);

// The transmission phase: requests until NBD_CMD_DISC or the stream ends. Returns once every
// request that was read has been answered (or the stream failed).
Task<Status> transmit(IoLoop& loop, Conn& conn, const ExportConfig& exp, const Negotiated& neg);

// Both, for one client. Ok on a clean NBD_CMD_DISC or NBD_OPT_ABORT.
Task<Status> serve_client(IoLoop& loop, Conn& conn, const ExportConfig& exp);

}  // namespace img::nbd
