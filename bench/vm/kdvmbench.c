/*
 * kdvmbench: the guest side of the kerneld benchmark (bench/vm/guest.sh).
 * Makes the kernel call request_module() without any exec of our own in
 * the loop, and times each call with CLOCK_MONOTONIC:
 *
 *   kdvmbench unknown N PREFIX LABEL
 *       N times RTM_NEWLINK of kind PREFIX<i> (no such kind): the kernel asks
 *       for rtnl-link-PREFIX<i>, which nothing provides; each must fail
 *       with EOPNOTSUPP.
 *   kdvmbench dummy N LABEL [MODULE.ko]
 *       N load/unload cycles: RTM_NEWLINK "kdb0" of kind dummy (the kernel
 *       asks for rtnl-link-dummy and the helper loads dummy), RTM_DELLINK,
 *       delete_module("dummy").  With MODULE.ko, the floor of such a
 *       cycle: each starts with finit_module() of that file, so the kernel
 *       finds dummy in place and asks nobody.
 *   kdvmbench failover PID LABEL
 *       Failover: SIGKILL to PID (kerneld); as soon as it is dead,
 *       RTM_NEWLINK "kdf0" of kind dummy (dummy not loaded: the kernel
 *       asks for rtnl-link-dummy, and whatever serves it without kerneld
 *       loads it).  One sample of the time from the kill to the link's
 *       creation (measure failover), and one of the kill to the death
 *       (failover-dead).  Then the link is deleted and dummy removed.
 *   kdvmbench modload N LABEL MODULE.ko
 *       The cost of a module load itself, for the BPF LSM program's
 *       hooks: N times finit_module() of MODULE.ko (measure finit), then
 *       N times init_module() of its bytes read once into memory (measure
 *       init), each followed by delete_module() (not timed).  MODULE.ko
 *       must be dummy's, uncompressed.
 *   kdvmbench serve KEY
 *       The floor for the in-kernel sender: the least a daemon can do.  A
 *       queue at KEY (root's, mode 0600) whose every request is answered
 *       "not loaded" at once, with no lookup, log or bookkeeping; runs
 *       until killed and removes its queue on SIGTERM.
 *
 * Prints one line per measure, which the host parses:
 *   VMBENCH S <measure> LABEL <ns> <ns> ...
 *   VMBENCH E <measure> LABEL <what went wrong>
 * Built static by bench/vm/run.sh.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_link.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define MAXN 1000

static int nl;
static unsigned seq;

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

struct req {
	struct nlmsghdr n;
	struct ifinfomsg i;
	char buf[512];
};

static struct rtattr *add_attr(struct nlmsghdr *n, int type, const void *data, int len)
{
	struct rtattr *a = (struct rtattr *)((char *)n + NLMSG_ALIGN(n->nlmsg_len));

	a->rta_type = type;
	a->rta_len = RTA_LENGTH(len);
	if (len)
		memcpy(RTA_DATA(a), data, len);
	n->nlmsg_len = NLMSG_ALIGN(n->nlmsg_len) + RTA_ALIGN(a->rta_len);
	return a;
}

/* Send a request and return 0 or the negative errno of its ack. */
static int talk(struct req *r)
{
	char buf[4096];
	struct nlmsghdr *h;
	ssize_t len;

	r->n.nlmsg_seq = ++seq;
	r->n.nlmsg_flags |= NLM_F_REQUEST | NLM_F_ACK;
	if (send(nl, r, r->n.nlmsg_len, 0) < 0)
		return -errno;
	for (;;) {
		len = recv(nl, buf, sizeof(buf), 0);
		if (len < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		for (h = (struct nlmsghdr *)buf; NLMSG_OK(h, (size_t)len); h = NLMSG_NEXT(h, len)) {
			if (h->nlmsg_seq != seq)
				continue;
			if (h->nlmsg_type == NLMSG_ERROR)
				return ((struct nlmsgerr *)NLMSG_DATA(h))->error;
		}
	}
}

static int newlink(const char *ifname, const char *kind)
{
	struct req r;
	struct rtattr *info;

	memset(&r, 0, sizeof(r));
	r.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	r.n.nlmsg_type = RTM_NEWLINK;
	r.n.nlmsg_flags = NLM_F_CREATE | NLM_F_EXCL;
	r.i.ifi_family = AF_UNSPEC;
	add_attr(&r.n, IFLA_IFNAME, ifname, strlen(ifname) + 1);
	info = add_attr(&r.n, IFLA_LINKINFO, NULL, 0);
	add_attr(&r.n, IFLA_INFO_KIND, kind, strlen(kind));
	info->rta_len = (char *)&r + r.n.nlmsg_len - (char *)info;
	return talk(&r);
}

static int dellink(const char *ifname)
{
	struct req r;

	memset(&r, 0, sizeof(r));
	r.n.nlmsg_len = NLMSG_LENGTH(sizeof(struct ifinfomsg));
	r.n.nlmsg_type = RTM_DELLINK;
	r.i.ifi_family = AF_UNSPEC;
	add_attr(&r.n, IFLA_IFNAME, ifname, strlen(ifname) + 1);
	return talk(&r);
}

static void print_samples(const char *measure, const char *label, long long *v, int n)
{
	int i;

	printf("VMBENCH S %s %s", measure, label);
	for (i = 0; i < n; i++)
		printf(" %lld", v[i]);
	printf("\n");
	fflush(stdout);
}

static int served_queue = -1;

static void remove_queue(int sig)
{
	(void)sig;
	msgctl(served_queue, IPC_RMID, NULL);
	_exit(0);
}

/* struct kerneld_msg as the 1995 daemon read it, new header. */
struct kerneld_msg {
	long mtype;
	long id;
	short version;
	short pid;
	char text[4096];
};

static int serve(const char *key_text)
{
	struct kerneld_msg m;
	key_t key = (key_t)strtol(key_text, NULL, 0);

	served_queue = msgget(key, IPC_CREAT | IPC_EXCL | 0600);
	if (served_queue < 0) {
		perror("kdvmbench serve: msgget");
		return 1;
	}
	signal(SIGTERM, remove_queue);
	signal(SIGINT, remove_queue);
	for (;;) {
		ssize_t len = msgrcv(served_queue, &m, sizeof(m) - sizeof(long), -255, 0);

		if (len < 0) {
			if (errno == EINTR)
				continue;
			perror("kdvmbench serve: msgrcv");
			return 1;
		}
		if (m.id == 0)
			continue; /* request_module_nowait(): nobody waits */
		m.mtype = m.id;
		m.id = 1; /* modprobe's "not found" */
		if (msgsnd(served_queue, &m, sizeof(long), 0) < 0)
			perror("kdvmbench serve: msgsnd");
	}
}

static void usage(void)
{
	fputs("usage: kdvmbench unknown N PREFIX LABEL | kdvmbench dummy N LABEL [MODULE.ko] | kdvmbench modload N LABEL MODULE.ko | kdvmbench failover PID LABEL | kdvmbench serve KEY\n",
	      stderr);
	exit(2);
}

/* Remove dummy, waiting while it is still in use. */
static int unload_dummy(const char *label)
{
	int tries = 0;

	while (syscall(SYS_delete_module, "dummy", O_NONBLOCK) != 0) {
		if ((errno != EAGAIN && errno != EBUSY) || ++tries > 1000) {
			printf("VMBENCH E dummy %s: delete_module: %s\n", label, strerror(errno));
			return 1;
		}
		usleep(1000);
	}
	return 0;
}

/* N finit_module() of FILE, then N init_module() of its bytes, each
 * timed alone; dummy removed after each. */
static int modload(int n, const char *label, const char *file, long long *f, long long *m)
{
	static char image[8 << 20];
	ssize_t len;
	int fd, i;

	fd = open(file, O_RDONLY | O_CLOEXEC);
	len = fd < 0 ? -1 : read(fd, image, sizeof(image));
	if (fd >= 0)
		close(fd);
	if (len <= 0 || len == (ssize_t)sizeof(image)) {
		printf("VMBENCH E modload %s: cannot read %s: %s\n", label, file, strerror(errno));
		return 1;
	}
	for (i = 0; i < n; i++) {
		long long t0;
		int r;

		fd = open(file, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			printf("VMBENCH E modload %s: open %s: %s\n", label, file, strerror(errno));
			return 1;
		}
		t0 = now_ns();
		r = (int)syscall(SYS_finit_module, fd, "", 0);
		f[i] = now_ns() - t0;
		close(fd);
		if (r != 0) {
			printf("VMBENCH E modload %s: finit_module: %s\n", label, strerror(errno));
			return 1;
		}
		if (unload_dummy(label))
			return 1;
	}
	for (i = 0; i < n; i++) {
		long long t0 = now_ns();
		int r = (int)syscall(SYS_init_module, image, (unsigned long)len, "");

		m[i] = now_ns() - t0;
		if (r != 0) {
			printf("VMBENCH E modload %s: init_module: %s\n", label, strerror(errno));
			return 1;
		}
		if (unload_dummy(label))
			return 1;
	}
	print_samples("finit", label, f, n);
	print_samples("init", label, m, n);
	return 0;
}

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif

static int failover(pid_t pid, const char *label)
{
	struct pollfd p = { .events = POLLIN };
	long long t0, t, dead;
	int r;

	p.fd = (int)syscall(SYS_pidfd_open, pid, 0);
	if (p.fd < 0) {
		printf("VMBENCH E failover %s: pidfd_open %d: %s\n", label, (int)pid, strerror(errno));
		return 1;
	}
	t0 = now_ns();
	if (kill(pid, SIGKILL) != 0) {
		printf("VMBENCH E failover %s: kill %d: %s\n", label, (int)pid, strerror(errno));
		return 1;
	}
	/*
	 * Wait for the death: until then a receiver thread of the dying
	 * kerneld may still be handed the request directly (pipelined send)
	 * and take it down with it, which is no failover but a request lost
	 * in a crash.  The pidfd is readable once every thread has exited,
	 * and so has closed its files and released its instance lock.
	 */
	if (poll(&p, 1, 10000) != 1) {
		printf("VMBENCH E failover %s: pid %d not dead 10 s after SIGKILL\n", label, (int)pid);
		return 1;
	}
	dead = now_ns() - t0;
	close(p.fd);
	r = newlink("kdf0", "dummy");
	t = now_ns() - t0;
	if (r != 0) {
		printf("VMBENCH E failover %s: link add after %lld ms: %s\n", label, t / 1000000,
		       strerror(-r));
		return 1;
	}
	print_samples("failover", label, &t, 1);
	print_samples("failover-dead", label, &dead, 1);
	r = dellink("kdf0");
	if (r != 0)
		printf("VMBENCH E failover %s: link del: %s\n", label, strerror(-r));
	return unload_dummy(label) || r != 0;
}

int main(int argc, char **argv)
{
	static long long a[MAXN], b[MAXN];
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	int n, i, r, bad = 0;

	if (argc == 3 && strcmp(argv[1], "serve") == 0)
		return serve(argv[2]);
	if (argc < 4)
		usage();
	nl = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	if (nl < 0 || bind(nl, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		perror("kdvmbench: netlink");
		return 1;
	}
	if (strcmp(argv[1], "failover") == 0 && argc == 4) {
		pid_t pid = (pid_t)atoi(argv[2]);

		if (pid < 2)
			usage();
		return failover(pid, argv[3]);
	}
	n = atoi(argv[2]);
	if (n < 1 || n > MAXN)
		usage();
	if (strcmp(argv[1], "unknown") == 0 && argc == 5) {
		char kind[64];

		for (i = 0; i < n; i++) {
			long long t0;

			snprintf(kind, sizeof(kind), "%s%d", argv[3], i);
			t0 = now_ns();
			r = newlink("kdbx0", kind);
			a[i] = now_ns() - t0;
			if (r != -EOPNOTSUPP) {
				printf("VMBENCH E unknown %s %s: got %s instead of EOPNOTSUPP\n",
				       argv[4], kind, r ? strerror(-r) : "success");
				bad++;
				if (r == 0)
					dellink("kdbx0");
			}
		}
		print_samples("unknown", argv[4], a, n);
	} else if (strcmp(argv[1], "dummy") == 0 && (argc == 4 || argc == 5)) {
		for (i = 0; i < n; i++) {
			long long t0 = now_ns(), t1;

			if (argc == 5) {
				int fd = open(argv[4], O_RDONLY | O_CLOEXEC);

				if (fd < 0 || syscall(SYS_finit_module, fd, "", 0) != 0) {
					printf("VMBENCH E dummy %s: finit_module: %s\n", argv[3], strerror(errno));
					return 1;
				}
				close(fd);
			}
			r = newlink("kdb0", "dummy");
			t1 = now_ns();
			if (r != 0) {
				printf("VMBENCH E dummy %s: link add: %s\n", argv[3], strerror(-r));
				bad++;
				continue;
			}
			r = dellink("kdb0");
			if (r != 0) {
				printf("VMBENCH E dummy %s: link del: %s\n", argv[3], strerror(-r));
				bad++;
			}
			bad += unload_dummy(argv[3]);
			a[i] = t1 - t0;
			b[i] = now_ns() - t0;
		}
		print_samples("dummy-load", argv[3], a, n);
		print_samples("dummy-cycle", argv[3], b, n);
	} else if (strcmp(argv[1], "modload") == 0 && argc == 5) {
		bad = modload(n, argv[3], argv[4], a, b);
	} else {
		usage();
	}
	return bad ? 1 : 0;
}
