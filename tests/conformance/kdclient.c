/*
 * kdclient: a kerneld client written only from the 1995 header
 * (linux/kerneld.h of Linux 1.3.57 to 2.1.89), for the conformance test
 * tests/tests/conformance.rs.  It shares no code with kmod-ipc: messages
 * are laid out by the C compiler from the two structures below, exactly
 * as the 1995 kernel, kdsend and kdstat declared them.
 *
 * Usage (KEY in decimal or 0x hex; TEXT in hex, "-" for none):
 *
 *   kdclient send KEY HDR MTYPE ID TEXT [MSGSZ]
 *       HDR is "old" or "new" (version 2, pid = getpid() as a short).
 *       ID is a number, "tool" (1024 + getpid(), as the 1995 kdstat and
 *       kdsend) or "kernel+N" (KERNELD_MINSEQ + N, as the kernel).
 *       The text is copied into text[] and msgsz is KDHDR + its length,
 *       as the 1995 senders computed it (KDHDR + strlen(text)), unless
 *       MSGSZ is given.  Prints "sent id=ID pid=PID msgsz=N".
 *   kdclient xchg KEY HDR MTYPE ID TEXT [MSGSZ]
 *       send, then receive the reply on ID (waiting up to 10 s), then
 *       check that no second message waits on ID.  Prints the "sent"
 *       line, then the "reply" line (see recv), then "more=0|1".
 *   kdclient recv KEY TYPE TIMEOUT_MS
 *       Receive one message of exactly TYPE (msgrcv with MSG_NOERROR),
 *       polling until TIMEOUT_MS.  Prints
 *       "reply rc=N raw=HEX old.mtype=M old.id=I new.version=V new.pid=P"
 *       (raw is mtype and the rc bytes of body), or "none".
 *   kdclient qnum KEY
 *       Prints "qnum=N" (messages on the queue).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/types.h>

#define MSIZE 1024                 /* the 1995 daemon's text limit */
#define KERNELD_MINSEQ 0x7fff0000  /* the kernel's first reply id */
#define BUF_TEXT 16384             /* room for any message we may get */

/* The 1995 header (linux/kerneld.h without NEW_KERNELD_PROTOCOL). */
struct oldkerneld_msg {
	long mtype;
	long id;
	char text[BUF_TEXT];
};

/* The new header (linux/kerneld.h with NEW_KERNELD_PROTOCOL). */
struct kerneld_msg {
	long mtype;
	long id;
	short version;
	short pid;
	char text[BUF_TEXT];
};

#define KDHDR_OLD (sizeof(long))
#define KDHDR_NEW (sizeof(long) + sizeof(short) + sizeof(short))

static union {
	struct oldkerneld_msg o;
	struct kerneld_msg n;
	unsigned char raw[sizeof(struct kerneld_msg)];
} m;

static void die(const char *what)
{
	fprintf(stderr, "kdclient: %s: %s\n", what, strerror(errno));
	exit(3);
}

static void usage(void)
{
	fprintf(stderr, "kdclient: bad usage (see the comment at the top of kdclient.c)\n");
	exit(4);
}

static long parse_long(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 0);
	if (errno || *end || end == s)
		usage();
	return v;
}

static int open_queue(const char *key)
{
	int qid = msgget((key_t)strtoul(key, NULL, 0), 0);

	if (qid < 0)
		die("msgget");
	return qid;
}

/* Decode hex into buf; returns the length. */
static size_t unhex(const char *hex, char *buf, size_t room)
{
	size_t n = 0;
	unsigned int b;

	if (strcmp(hex, "-") == 0)
		return 0;
	if (strlen(hex) % 2)
		usage();
	while (*hex) {
		if (n >= room || sscanf(hex, "%2x", &b) != 1)
			usage();
		buf[n++] = (char)b;
		hex += 2;
	}
	return n;
}

static void print_hex(const unsigned char *p, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		printf("%02x", p[i]);
}

static long do_send(int qid, int argc, char **argv)
{
	const char *hdr = argv[0];
	long mtype = parse_long(argv[1]);
	const char *ids = argv[2];
	long id;
	size_t len, msgsz;
	char *text;

	if (strcmp(ids, "tool") == 0)
		id = 1024 + getpid();
	else if (strncmp(ids, "kernel+", 7) == 0)
		id = KERNELD_MINSEQ + parse_long(ids + 7);
	else
		id = parse_long(ids);

	memset(&m, 0, sizeof m);
	if (strcmp(hdr, "old") == 0) {
		m.o.mtype = mtype;
		m.o.id = id;
		text = m.o.text;
		len = unhex(argv[3], text, BUF_TEXT);
		msgsz = KDHDR_OLD + len;
	} else if (strcmp(hdr, "new") == 0) {
		m.n.mtype = mtype;
		m.n.id = id;
		m.n.version = 2;
		m.n.pid = (short)getpid();
		text = m.n.text;
		len = unhex(argv[3], text, BUF_TEXT);
		msgsz = KDHDR_NEW + len;
	} else {
		usage();
		return 0;
	}
	if (argc > 4)
		msgsz = (size_t)parse_long(argv[4]);
	if (msgsnd(qid, &m, msgsz, IPC_NOWAIT) < 0)
		die("msgsnd");
	printf("sent id=%ld pid=%d msgsz=%zu\n", id, (int)getpid(), msgsz);
	return id;
}

/* Receive one message of exactly `type`; 0 if none came in time. */
static int do_recv(int qid, long type, long timeout_ms)
{
	struct timespec start, now, nap = { 0, 1000000 };
	ssize_t rc;

	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		memset(&m, 0, sizeof m);
		rc = msgrcv(qid, &m, BUF_TEXT, type, IPC_NOWAIT | MSG_NOERROR);
		if (rc >= 0)
			break;
		if (errno != ENOMSG)
			die("msgrcv");
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((now.tv_sec - start.tv_sec) * 1000 +
		    (now.tv_nsec - start.tv_nsec) / 1000000 >= timeout_ms) {
			printf("none\n");
			return 0;
		}
		nanosleep(&nap, NULL);
	}
	printf("reply rc=%zd raw=", rc);
	print_hex(m.raw, sizeof(long) + (size_t)rc);
	printf(" old.mtype=%ld old.id=%ld new.version=%d new.pid=%d\n",
	       m.o.mtype, m.o.id, m.n.version, m.n.pid);
	return 1;
}

int main(int argc, char **argv)
{
	int qid;
	long id;
	struct msqid_ds ds;

	if (argc < 3)
		usage();
	qid = open_queue(argv[2]);
	if (strcmp(argv[1], "send") == 0 && (argc == 7 || argc == 8)) {
		do_send(qid, argc - 3, argv + 3);
		return 0;
	}
	if (strcmp(argv[1], "xchg") == 0 && (argc == 7 || argc == 8)) {
		id = do_send(qid, argc - 3, argv + 3);
		if (id <= 0)
			usage();
		if (!do_recv(qid, id, 10000))
			return 0;
		/* Exactly one message answers a short reply. */
		memset(&m, 0, sizeof m);
		if (msgrcv(qid, &m, BUF_TEXT, id, IPC_NOWAIT | MSG_NOERROR) >= 0)
			printf("more=1\n");
		else
			printf("more=0\n");
		return 0;
	}
	if (strcmp(argv[1], "recv") == 0 && argc == 5)
		return do_recv(qid, parse_long(argv[3]), parse_long(argv[4])) ? 0 : 0;
	if (strcmp(argv[1], "qnum") == 0 && argc == 3) {
		if (msgctl(qid, IPC_STAT, &ds) < 0)
			die("msgctl");
		printf("qnum=%lu\n", (unsigned long)ds.msg_qnum);
		return 0;
	}
	usage();
	return 4;
}
