/* SPDX-License-Identifier: (GPL-2.0 OR MIT) */
/*
 * myrimx_abi.h - the device ABI of myriemu's MX personality ("myrimx").
 *
 * myrimx is NOT a Myricom product: it is myriemu's own zero-copy
 * personality of an emulated Myri-10G board (vendor 0x14c1, a device id the
 * myri10ge driver does not bind). Design: shared/reference/zero-copy-design.md
 * section 6; device side: device/myrimx/README.md.
 *
 * Everything here is LITTLE-ENDIAN (unlike the big-endian myri10ge firmware
 * interface). Commands and events are 64 bytes. Registers are in BAR0:
 * page 0 is global, page 1+e belongs to endpoint e. 64-bit registers may be
 * written with one 8-byte store or two 4-byte stores (low half first); the
 * side effect of a 64-bit trigger register happens on the store that
 * writes its high half.
 *
 * device/myrimx/abi_test.go parses this file and checks every MYRIMX_
 * constant against the Go model: change both or the test fails.
 *
 * Only #define lines with plain integer values are parsed; keep it so.
 */
#ifndef MYRIMX_ABI_H
#define MYRIMX_ABI_H

/* PCI identity */
#define MYRIMX_PCI_VENDOR          0x14c1
#define MYRIMX_PCI_DEVICE          0x00a0 /* myri10ge binds 0x0008 and 0x0009 only */
#define MYRIMX_PCI_CLASS           0x028000 /* network controller, other */
#define MYRIMX_PCI_REVISION        0x01

/* BARs */
#define MYRIMX_REGS_BAR            0      /* 64-bit, non-prefetchable (UC) */
#define MYRIMX_REGS_SIZE           0x20000 /* global page + 16 endpoint pages, rounded to a power of two */
#define MYRIMX_PAGE_SIZE           0x1000
#define MYRIMX_MSIX_BAR            2
#define MYRIMX_MSIX_SIZE           0x1000
#define MYRIMX_MSIX_TABLE          0x000
#define MYRIMX_MSIX_PBA            0x800
#define MYRIMX_MAX_ENDPOINTS       16
#define MYRIMX_VECTOR_DEVICE       0      /* device / error vector; endpoint e uses 1+e */

/* Global page (BAR0 + 0) */
#define MYRIMX_REG_MAGIC           0x00 /* RO u32: "MXEM" */
#define MYRIMX_MAGIC               0x4d45584d
#define MYRIMX_REG_ABI_VERSION     0x04 /* RO u32: major << 16 | minor */
#define MYRIMX_ABI_VERSION         0x00010000
#define MYRIMX_REG_CAPS            0x08 /* RO u64, see MYRIMX_CAPS_* */
#define MYRIMX_REG_NIC_ID          0x10 /* RO u64: 48-bit MX nic id */
#define MYRIMX_REG_DEV_STATUS      0x18 /* RO u32, see MYRIMX_DEV_* */
#define MYRIMX_REG_DEV_CTRL        0x20 /* WO u32 */
#define MYRIMX_REG_ERR_INFO        0x28 /* RO u32: last fatal error code */
#define MYRIMX_REG_MAX_PAGES       0x30 /* RO u32: most pages in one region */
#define MYRIMX_REG_AUDIT_COUNT     0x38 /* RO u32: DMA audit violations seen (all modes) */

/* CAPS fields: (caps >> SHIFT) & 0xff, regions (>> 8) & 0xffff */
#define MYRIMX_CAPS_ENDPOINTS_SHIFT   0
#define MYRIMX_CAPS_REGIONS_SHIFT     8  /* 16 bits: regions per endpoint */
#define MYRIMX_CAPS_CMD_LOG2_SHIFT    24 /* log2 of a command's size (6) */
#define MYRIMX_CAPS_EVENT_LOG2_SHIFT  32 /* log2 of an event's size (6) */
#define MYRIMX_CAPS_AUDIT_SHIFT       40 /* audit mode: MYRIMX_AUDIT_* */
#define MYRIMX_CAPS_PAGE_SHIFTS_SHIFT 48 /* bit n set: page_shift 12+n supported (12 and 21) */

#define MYRIMX_REGIONS_PER_EP      1024
#define MYRIMX_MAX_PAGES           262144 /* 1 GiB in 4 KiB pages */
#define MYRIMX_CHUNK               65536  /* most bytes one DMA chunk moves: bounds a fence's wait */

#define MYRIMX_AUDIT_OFF           0
#define MYRIMX_AUDIT_OBSERVE       1
#define MYRIMX_AUDIT_ENFORCE       2

#define MYRIMX_DEV_RUNNING         0x1
#define MYRIMX_DEV_FATAL           0x2
#define MYRIMX_DEV_BME_OFF_SEEN    0x4

#define MYRIMX_DEV_CTRL_RESET      0x1 /* soft reset: aborts everything, like FLR */

/* Endpoint page e (BAR0 + MYRIMX_PAGE_SIZE * (1 + e)) */
#define MYRIMX_EP_CTRL             0x00 /* WO u32, MYRIMX_EP_CTRL_* */
#define MYRIMX_EP_CMDQ_BASE        0x08 /* RW u64: GPA of the command ring, 4 KiB aligned */
#define MYRIMX_EP_CMDQ_ORDER       0x10 /* RW u32: log2 of entries */
#define MYRIMX_EP_CMDQ_TAIL        0x18 /* WO u32 doorbell: free-running producer index */
#define MYRIMX_EP_CMDQ_HEAD        0x20 /* RO u32: free-running consumer index */
#define MYRIMX_EP_EQ_BASE          0x28 /* RW u64: GPA of the event ring, 4 KiB aligned */
#define MYRIMX_EP_EQ_ORDER         0x30 /* RW u32: log2 of entries */
#define MYRIMX_EP_EQ_HEAD          0x38 /* RW u32: driver's free-running consumer index; a write re-arms the vector */
#define MYRIMX_EP_STATUS_GPA       0x40 /* RW u64: GPA of the 64-byte status block, 64-byte aligned */
#define MYRIMX_EP_FENCE_DONE       0x48 /* RO u64: fence_seq of the last completed FENCE (a read orders) */
#define MYRIMX_EP_INV_SYNC         0x50 /* WO u64: region_id << 32 | generation; synchronous DEREG */
#define MYRIMX_EP_INV_SYNC_DONE    0x58 /* RO u32: generation last invalidated through INV_SYNC */
#define MYRIMX_EP_PT_ROOT          0x60 /* RW u64: GPA of the owner's page-table root | levels (4 or 5) in bits 2:0 */
#define MYRIMX_EP_STATUS           0x68 /* RO u32: state in bits 7:0, cause in bits 15:8 */

#define MYRIMX_EP_CTRL_OPEN        1
#define MYRIMX_EP_CTRL_CLOSE       2
#define MYRIMX_EP_CTRL_RESET       3

#define MYRIMX_EP_STATE_CLOSED     0
#define MYRIMX_EP_STATE_OPEN       1
#define MYRIMX_EP_STATE_ERROR      2

#define MYRIMX_EP_CAUSE_NONE       0
#define MYRIMX_EP_CAUSE_EVENTQ_FULL 1 /* the driver did not consume events (MX's EVENTQ_FULL) */
#define MYRIMX_EP_CAUSE_BAD_RING   2 /* tail beyond the ring, or a ring that cannot be used */
#define MYRIMX_EP_CAUSE_DMA_FAULT  3 /* a control DMA (ring, EQ, status block) failed */
#define MYRIMX_EP_CAUSE_BAD_CONFIG 4 /* OPEN with unusable bases or orders */

#define MYRIMX_RING_ORDER_MIN      1
#define MYRIMX_RING_ORDER_MAX      12

/* Status block (64 bytes at STATUS_GPA, written by the device) */
#define MYRIMX_SB_FENCE_DONE       0x00 /* u64 */
#define MYRIMX_SB_CMDQ_HEAD        0x08 /* u32 */
#define MYRIMX_SB_EQ_TAIL          0x0c /* u32: events written, free-running */
#define MYRIMX_SB_BAD_CMDS         0x10 /* u32 */
#define MYRIMX_SB_EQ_OVERFLOWS     0x14 /* u32 */
#define MYRIMX_SB_SIZE             64

/* Commands: 64 bytes. Common header. */
#define MYRIMX_CMD_SIZE            64
#define MYRIMX_CMD_OPCODE          0x00 /* u8 */
#define MYRIMX_CMD_FLAGS           0x01 /* u8 */
#define MYRIMX_CMD_REASON          0x02 /* u8: MYRIMX_REASON_* for DEREG */
#define MYRIMX_CMD_SEQ             0x04 /* u32: echoed */
#define MYRIMX_CMD_COOKIE          0x08 /* u64: echoed */
/* REG, DEREG, SEND, RECV */
#define MYRIMX_CMD_REGION_ID       0x10 /* u32 */
#define MYRIMX_CMD_GENERATION      0x14 /* u32 */
/* REG */
#define MYRIMX_CMD_REG_ACCESS      0x18 /* u32: MYRIMX_ACCESS_* */
#define MYRIMX_CMD_REG_PAGE_SHIFT  0x1c /* u8: 12 or 21 */
#define MYRIMX_CMD_REG_FIRST_OFF   0x20 /* u32: offset of the first byte in the first page */
#define MYRIMX_CMD_REG_NR_PAGES    0x24 /* u32 */
#define MYRIMX_CMD_REG_LENGTH      0x28 /* u64 */
#define MYRIMX_CMD_REG_USER_VA     0x30 /* u64: kept for the page-table audit */
#define MYRIMX_CMD_REG_PAGE_LIST   0x38 /* u64: GPA of nr_pages u64 page addresses */
/* SEND and RECV */
#define MYRIMX_CMD_OFFSET          0x18 /* u64: into the region */
#define MYRIMX_CMD_LENGTH          0x20 /* u32 */
#define MYRIMX_CMD_SEND_DEST_EP    0x24 /* u16 */
#define MYRIMX_CMD_SEND_DEST_NIC   0x28 /* u64 */
#define MYRIMX_CMD_SEND_MATCH      0x30 /* u64 */
#define MYRIMX_CMD_RECV_MATCH      0x28 /* u64 */
#define MYRIMX_CMD_RECV_MASK       0x30 /* u64 */
/* CANCEL */
#define MYRIMX_CMD_CANCEL_SEQ      0x10 /* u32: cmd_seq of the target */
#define MYRIMX_CMD_CANCEL_COOKIE   0x18 /* u64: cookie of the target, with MYRIMX_CANCEL_BY_COOKIE */
/* FENCE */
#define MYRIMX_CMD_FENCE_SEQ       0x10 /* u64 */

#define MYRIMX_OP_REG              1
#define MYRIMX_OP_DEREG            2
#define MYRIMX_OP_SEND             3
#define MYRIMX_OP_RECV             4
#define MYRIMX_OP_CANCEL           5
#define MYRIMX_OP_FENCE            6
#define MYRIMX_OP_NOP              7

#define MYRIMX_FLAG_EVENT          0x01 /* FENCE and NOP: post a completion event (others always do) */
#define MYRIMX_CANCEL_BY_COOKIE    0x02

#define MYRIMX_ACCESS_SEND_SRC     0x1
#define MYRIMX_ACCESS_RECV_DST     0x2

/* Invalidation reasons: 0..7 are Linux's enum mmu_notifier_event */
#define MYRIMX_REASON_UNMAP           0
#define MYRIMX_REASON_CLEAR           1
#define MYRIMX_REASON_PROTECTION_VMA  2
#define MYRIMX_REASON_PROTECTION_PAGE 3
#define MYRIMX_REASON_SOFT_DIRTY      4
#define MYRIMX_REASON_RELEASE         5
#define MYRIMX_REASON_MIGRATE         6
#define MYRIMX_REASON_EXCLUSIVE       7
#define MYRIMX_REASON_USER            8  /* DEREG asked by the program or close() */
#define MYRIMX_REASON_DMA_UNMAP       9  /* device side: QEMU unmapped guest RAM */
#define MYRIMX_REASON_RESET           10 /* device side: reset or endpoint close */
#define MYRIMX_REASON_INV_SYNC        11 /* the INV_SYNC register */

/* Events: 64 bytes. The device writes bytes 4..63, then the first word
 * (type, status, phase) with one 4-byte store. Phase is 1 on the first
 * pass over the ring and flips on every wrap. */
#define MYRIMX_EVENT_SIZE          64
#define MYRIMX_EV_TYPE             0x00 /* u8 */
#define MYRIMX_EV_STATUS           0x01 /* u8 */
#define MYRIMX_EV_PHASE            0x02 /* u8 */
#define MYRIMX_EV_SEQ              0x04 /* u32: cmd_seq of the command */
#define MYRIMX_EV_COOKIE           0x08 /* u64 */
#define MYRIMX_EV_MATCH            0x10 /* u64: match of the message; fence_seq for FENCE_DONE */
#define MYRIMX_EV_SRC_NIC          0x18 /* u64 */
#define MYRIMX_EV_SRC_EP           0x20 /* u16 */
#define MYRIMX_EV_MSG_LENGTH       0x24 /* u32 */
#define MYRIMX_EV_XFER_LENGTH      0x28 /* u32 */
#define MYRIMX_EV_REGION_ID        0x2c /* u32 */
#define MYRIMX_EV_GENERATION       0x30 /* u32 */
#define MYRIMX_EV_REASON           0x34 /* u8: REGION_REVOKED's reason; EP_ERROR's cause */

#define MYRIMX_EVT_REG_DONE        1
#define MYRIMX_EVT_DEREG_DONE      2
#define MYRIMX_EVT_SEND_DONE       3
#define MYRIMX_EVT_RECV_DONE       4
#define MYRIMX_EVT_FENCE_DONE      5
#define MYRIMX_EVT_CANCEL_DONE     6
#define MYRIMX_EVT_REGION_REVOKED  7
#define MYRIMX_EVT_EP_ERROR        8
#define MYRIMX_EVT_NOP_DONE        9

#define MYRIMX_STATUS_SUCCESS            0
#define MYRIMX_STATUS_TRUNCATED          1
#define MYRIMX_STATUS_CANCELLED          2
#define MYRIMX_STATUS_BAD_RDMAWIN        3  /* unknown or stale (id, generation) */
#define MYRIMX_STATUS_REGION_INVALIDATED 4
#define MYRIMX_STATUS_ACCESS             5  /* region access, or offset+length outside it */
#define MYRIMX_STATUS_BAD_ENDPOINT       6
#define MYRIMX_STATUS_ENDPOINT_CLOSED    7
#define MYRIMX_STATUS_NO_RESOURCES       8
#define MYRIMX_STATUS_DMA_FAULT          9  /* refused by the dma door or the audit (enforce) */
#define MYRIMX_STATUS_BUSY               10 /* REG of an id in use */
#define MYRIMX_STATUS_BAD_ADDRESS        11 /* REG: a page not mapped (writable for RECV_DST) */
#define MYRIMX_STATUS_BAD_COMMAND        12 /* unknown opcode or malformed fields */
#define MYRIMX_STATUS_NOT_FOUND          13 /* CANCEL: no such pending command */

#endif /* MYRIMX_ABI_H */
