// virtio-scsi wire layout (virtio 1.2 §5.6) and the SCSI constants the device uses (SPC-4 / SBC-3
// as Linux's sd driver speaks them). Structures are described by offsets into byte buffers that
// the device copies out of (or into) guest memory: nothing is laid over guest memory.
#pragma once

#include <cstdint>

namespace vmm::virtio::scsi {

// §5.6.2 Virtqueues: controlq, eventq, then the request queues.
inline constexpr uint16_t kControlQueue = 0;
inline constexpr uint16_t kEventQueue = 1;
inline constexpr uint16_t kFirstRequestQueue = 2;

// §5.6.4 Device configuration layout (all little-endian).
namespace cfg {
inline constexpr uint32_t kNumQueues = 0;  // request queues
inline constexpr uint32_t kSegMax = 4;
inline constexpr uint32_t kMaxSectors = 8;
inline constexpr uint32_t kCmdPerLun = 12;
inline constexpr uint32_t kEventInfoSize = 16;
inline constexpr uint32_t kSenseSize = 20;   // driver-writable
inline constexpr uint32_t kCdbSize = 24;     // driver-writable
inline constexpr uint32_t kMaxChannel = 28;  // u16
inline constexpr uint32_t kMaxTarget = 30;   // u16
inline constexpr uint32_t kMaxLun = 32;      // u32
inline constexpr uint32_t kSize = 36;
}  // namespace cfg

inline constexpr uint32_t kDefaultCdbSize = 32;  // §5.6.4: the initial values
inline constexpr uint32_t kDefaultSenseSize = 96;
inline constexpr uint32_t kMaxCdbSize = 256;  // our caps on what a driver may write there
inline constexpr uint32_t kMaxSenseSize = 256;
inline constexpr uint32_t kEventSize = 16;  // struct virtio_scsi_event
// §5.6.3: VIRTIO_SCSI_F_CHANGE, and §5.6.6.3.3's event for it (reason = ASC | ASCQ << 8).
inline constexpr uint64_t kFChange = 1ull << 2;
inline constexpr uint32_t kEventParamChange = 3;

// §5.6.6.1 struct virtio_scsi_req_cmd, device-readable part: lun[8], id (tag) le64,
// task_attr, prio, crn, then cdb[cdb_size].
inline constexpr uint32_t kCmdReqHeader = 19;
// Device-writable part: sense_len le32, residual le32, status_qualifier le16, status, response,
// then sense[sense_size].
inline constexpr uint32_t kCmdRespHeader = 12;

// §5.6.6.1 response codes.
inline constexpr uint8_t kSOk = 0;
inline constexpr uint8_t kSOverrun = 1;
inline constexpr uint8_t kSAborted = 2;
inline constexpr uint8_t kSBadTarget = 3;
inline constexpr uint8_t kSReset = 4;
inline constexpr uint8_t kSBusy = 5;
inline constexpr uint8_t kSTransportFailure = 6;
inline constexpr uint8_t kSTargetFailure = 7;
inline constexpr uint8_t kSNexusFailure = 8;
inline constexpr uint8_t kSFailure = 9;
inline constexpr uint8_t kSFunctionSucceeded = 10;
inline constexpr uint8_t kSFunctionRejected = 11;
inline constexpr uint8_t kSIncorrectLun = 12;
inline constexpr uint8_t kSFunctionComplete = 0;

// §5.6.6.2 controlq request types and task management subtypes.
inline constexpr uint32_t kTTmf = 0;
inline constexpr uint32_t kTAnQuery = 1;
inline constexpr uint32_t kTAnSubscribe = 2;
inline constexpr uint32_t kTmfAbortTask = 0;
inline constexpr uint32_t kTmfAbortTaskSet = 1;
inline constexpr uint32_t kTmfClearAca = 2;
inline constexpr uint32_t kTmfClearTaskSet = 3;
inline constexpr uint32_t kTmfITNexusReset = 4;
inline constexpr uint32_t kTmfLogicalUnitReset = 5;
inline constexpr uint32_t kTmfQueryTask = 6;
inline constexpr uint32_t kTmfQueryTaskSet = 7;
// struct virtio_scsi_ctrl_tmf: type le32, subtype le32, lun[8], id le64 | response u8.
inline constexpr uint32_t kTmfReqSize = 24;
// struct virtio_scsi_ctrl_an: type le32, lun[8], event_requested le32 | event_actual le32,
// response.
inline constexpr uint32_t kAnReqSize = 16;
inline constexpr uint32_t kAnRespSize = 5;

// SAM-5 status codes.
inline constexpr uint8_t kStatusGood = 0x00;
inline constexpr uint8_t kStatusCheckCondition = 0x02;

// SPC-4 §4.5.6 sense keys and the additional sense codes we report.
inline constexpr uint8_t kKeyNoSense = 0x0;
inline constexpr uint8_t kKeyMediumError = 0x3;
inline constexpr uint8_t kKeyIllegalRequest = 0x5;
inline constexpr uint8_t kKeyUnitAttention = 0x6;
inline constexpr uint8_t kKeyDataProtect = 0x7;
inline constexpr uint8_t kAscWriteError = 0x0c;
inline constexpr uint8_t kAscUnrecoveredReadError = 0x11;
inline constexpr uint8_t kAscParameterListLength = 0x1a;
inline constexpr uint8_t kAscInvalidOpcode = 0x20;
inline constexpr uint8_t kAscLbaOutOfRange = 0x21;
inline constexpr uint8_t kAscInvalidFieldInCdb = 0x24;
inline constexpr uint8_t kAscInvalidFieldInParamList = 0x26;
inline constexpr uint8_t kAscWriteProtected = 0x27;
inline constexpr uint8_t kAscParametersChanged = 0x2a;  // with ASCQ 0x09: CAPACITY DATA HAS CHANGED
inline constexpr uint8_t kAscqCapacityChanged = 0x09;
inline constexpr uint8_t kAscSavingParamsUnsupported = 0x39;
inline constexpr uint32_t kFixedSenseSize = 18;  // SPC-4 §4.5.3

// Operation codes (SPC-4, SBC-3).
namespace op {
inline constexpr uint8_t kTestUnitReady = 0x00;
inline constexpr uint8_t kRequestSense = 0x03;
inline constexpr uint8_t kRead6 = 0x08;
inline constexpr uint8_t kWrite6 = 0x0a;
inline constexpr uint8_t kInquiry = 0x12;
inline constexpr uint8_t kModeSense6 = 0x1a;
inline constexpr uint8_t kStartStopUnit = 0x1b;
inline constexpr uint8_t kReadCapacity10 = 0x25;
inline constexpr uint8_t kRead10 = 0x28;
inline constexpr uint8_t kWrite10 = 0x2a;
inline constexpr uint8_t kSynchronizeCache10 = 0x35;
inline constexpr uint8_t kWriteSame10 = 0x41;
inline constexpr uint8_t kUnmap = 0x42;
inline constexpr uint8_t kModeSense10 = 0x5a;
inline constexpr uint8_t kRead16 = 0x88;
inline constexpr uint8_t kWrite16 = 0x8a;
inline constexpr uint8_t kSynchronizeCache16 = 0x91;
inline constexpr uint8_t kWriteSame16 = 0x93;
inline constexpr uint8_t kServiceActionIn16 = 0x9e;  // READ CAPACITY 16 is service action 0x10
inline constexpr uint8_t kReportLuns = 0xa0;
}  // namespace op
inline constexpr uint8_t kSaReadCapacity16 = 0x10;

}  // namespace vmm::virtio::scsi
