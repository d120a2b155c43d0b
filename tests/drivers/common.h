/*
 * Shared definitions of the ICA C test drivers.
 *
 * The Rust host tests mirror these numbers and this layout; change both sides
 * together.  Every IOCTL is CTL_CODE(FILE_DEVICE_UNKNOWN, fn, method,
 * FILE_ANY_ACCESS), i.e. (0x22 << 16) | (fn << 2) | method.
 */
#ifndef ICA_TEST_COMMON_H
#define ICA_TEST_COMMON_H

/* ioctl.sys */
#define IOCTL_ICA_REVERSE    CTL_CODE(FILE_DEVICE_UNKNOWN, 0x800, METHOD_BUFFERED,   FILE_ANY_ACCESS) /* 0x00222000 */
#define IOCTL_ICA_COUNT      CTL_CODE(FILE_DEVICE_UNKNOWN, 0x801, METHOD_IN_DIRECT,  FILE_ANY_ACCESS) /* 0x00222005 */
#define IOCTL_ICA_FILL       CTL_CODE(FILE_DEVICE_UNKNOWN, 0x802, METHOD_OUT_DIRECT, FILE_ANY_ACCESS) /* 0x0022200A */
#define IOCTL_ICA_MULTIPLY   CTL_CODE(FILE_DEVICE_UNKNOWN, 0x803, METHOD_NEITHER,    FILE_ANY_ACCESS) /* 0x0022200F */
#define IOCTL_ICA_SELFTEST   CTL_CODE(FILE_DEVICE_UNKNOWN, 0x804, METHOD_BUFFERED,   FILE_ANY_ACCESS) /* 0x00222010 */

/* function.sys (and filter.sys, which adds 1 on the way up) */
#define IOCTL_ICA_ADD        CTL_CODE(FILE_DEVICE_UNKNOWN, 0x900, METHOD_BUFFERED,   FILE_ANY_ACCESS) /* 0x00222400 */

/* unknownimport.sys */
#define IOCTL_ICA_CALL_UNKNOWN CTL_CODE(FILE_DEVICE_UNKNOWN, 0xA00, METHOD_BUFFERED, FILE_ANY_ACCESS) /* 0x00222800 */
/* unknownimport.sys and nullderef.sys */
#define IOCTL_ICA_PING       CTL_CODE(FILE_DEVICE_UNKNOWN, 0xA01, METHOD_BUFFERED,   FILE_ANY_ACCESS) /* 0x00222804 */

/* nullderef.sys */
#define IOCTL_ICA_NULL_DEREF CTL_CODE(FILE_DEVICE_UNKNOWN, 0xB00, METHOD_BUFFERED,   FILE_ANY_ACCESS) /* 0x00222C00 */

/* regtest.sys (which also answers IOCTL_ICA_SELFTEST with its registry checks) */
#define IOCTL_ICA_REG_PNP_RESULT CTL_CODE(FILE_DEVICE_UNKNOWN, 0xC00, METHOD_BUFFERED, FILE_ANY_ACCESS) /* 0x00223000 */

/* Size of ioctl.sys's READ/WRITE scratch buffer. */
#define ICA_SCRATCH_SIZE 256

/*
 * Output of IOCTL_ICA_SELFTEST: 128 bytes, same layout on x86 and x64.
 *   offset 0: ULONG Passed
 *   offset 4: ULONG Failed
 *   offset 8: CHAR  FirstFailure[120], NUL-terminated name of the first
 *             failing check ("" when Failed == 0)
 */
#define ICA_FAILURE_TEXT_LEN 120
typedef struct _ICA_SELFTEST_RESULT {
    ULONG Passed;
    ULONG Failed;
    CHAR FirstFailure[ICA_FAILURE_TEXT_LEN];
} ICA_SELFTEST_RESULT, *PICA_SELFTEST_RESULT;

#define ICA_STATIC_ASSERT(name, cond) typedef char ica_static_assert_##name[(cond) ? 1 : -1]
ICA_STATIC_ASSERT(selftest_size, sizeof(ICA_SELFTEST_RESULT) == 128);

#endif /* ICA_TEST_COMMON_H */
