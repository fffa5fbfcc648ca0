// ScsiWorker: the virtio-scsi backend on the shared QueueServer. Request queue chains are split
// (request.h), their LUN decoded and their CDB decoded (cdb.h) before any I/O; the transfer
// length is checked against the chain's data buffers (a CDB that claims more than the buffers
// hold gets VIRTIO_SCSI_S_OVERRUN, a chain with data the wrong way VIRTIO_SCSI_S_FAILURE), then
// one coroutine per command runs it on libimg, so every command the driver posted is in flight
// at once on io_uring. An I/O error from libimg is CHECK CONDITION / MEDIUM ERROR.
//
// Task management (§5.6.6.2): libimg I/O cannot be cancelled once submitted, so ABORT TASK,
// ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET and I_T NEXUS RESET wait until the tasks
// they name have completed and then report FUNCTION COMPLETE (SAM-5 §7: the tasks are no longer
// in the task set); QUERY TASK / QUERY TASK SET report FUNCTION SUCCEEDED while a task is in
// flight; CLEAR ACA (no ACA) and unknown functions are FUNCTION REJECTED. Event queue buffers are
// held for the one event raised (AN queries report no supported events).
//
// Resize (a LUN grown under a running guest, resize()): on the server thread with no command in
// flight, the image grows and is flushed, READ CAPACITY reports the new size, and the LUN gets a
// unit attention, CAPACITY DATA HAS CHANGED (SPC-4 §5.14, 2Ah/09h): the next command to it other
// than INQUIRY, REPORT LUNS and REQUEST SENSE ends with CHECK CONDITION and that sense, once.
// With VIRTIO_SCSI_F_CHANGE negotiated a VIRTIO_SCSI_T_PARAM_CHANGE event (§5.6.6.3.3) goes to the
// driver too (Linux rescans the disk's capacity on it), at once or when it next posts an event
// buffer; one pending event per LUN at most.
//
// Thread-safety: start()/stop() from the owning thread; the rest runs on the server thread.
#pragma once

#include <unordered_map>
#include <vector>

#include "img/block_driver.h"
#include "virtio/buffers.h"
#include "virtio/queue_server.h"
#include "virtio/scsi/cdb.h"
#include "virtio/scsi/request.h"

namespace vmm::virtio::scsi {

struct WorkerLun {
  img::BlockDriver* disk = nullptr;
  LunInfo info;
};

class ScsiWorker final : public ChainHandler {
 public:
  ScsiWorker(img::IoLoop& loop, std::vector<WorkerLun> luns, uint32_t cdb_size, uint32_t sense_size,
             std::vector<ActiveQueue> queues, VirtioInterrupt& irq, bool change_events = false);
  ~ScsiWorker() override { server_.stop(); }

  img::Status start() { return server_.start(); }
  void stop() { server_.stop(); }
  img::Status pause() { return server_.pause(); }
  void resume() { server_.resume(); }
  // From the owning thread: grows LUN `lun` to `blocks` 512-byte blocks (see above).
  img::Status resize(size_t lun, uint64_t new_size);

  img::Status handle_chain(uint16_t queue, DescriptorChain chain) override;
  void stopping() override {
    parked_events_.clear();
    pending_events_.clear();
  }
  // VM pause: the commands in flight finish, then every writable LUN is flushed, so a paused VM's
  // images hold everything the guest was told was written (as blk's quiesce does).
  img::Task<img::Status> quiesce() override;

 private:
  struct Outcome {
    uint8_t response = 0;
    uint8_t status = 0;
    Sense sense;
    uint64_t data_in = 0;   // bytes written into data-in
    uint64_t data_out = 0;  // bytes consumed from data-out
  };
  img::Task<void> run_command(uint16_t queue, uint16_t head, CmdRequest req);
  img::Task<Outcome> execute(WorkerLun& lun, const Command& c, CmdRequest& req);
  img::Task<img::Status> write_same(WorkerLun& lun, const Command& c, CmdRequest& req);
  img::Task<void> run_control(uint16_t head, CtrlRequest req);
  bool busy(int lun, std::optional<uint64_t> tag) const;

  std::vector<WorkerLun> luns_;
  const uint32_t cdb_size_;
  const uint32_t sense_size_;
  // Tags in flight per LUN (a driver may reuse a tag; a count per tag).
  std::vector<std::unordered_map<uint64_t, unsigned>> in_flight_;
  struct EventBuffer {
    uint16_t head;
    Buffers bufs;
  };
  void deliver_events();
  std::vector<EventBuffer> parked_events_;
  std::vector<size_t> pending_events_;  // LUNs whose PARAM_CHANGE waits for a buffer
  std::vector<bool> unit_attention_;    // per LUN: CAPACITY DATA HAS CHANGED pending
  const bool change_events_;
  QueueServer server_;  // last: stopped before the members above go
};

}  // namespace vmm::virtio::scsi
