/*
 * trigger: tiny helper for the VM scenarios; provokes the kernel into calling
 * request_module() in ways busybox cannot.  Built static so it needs nothing
 * from the guest.
 *
 *   trigger [-u UID] socket FAMILY TYPE PROTO [HOLD_SECONDS]
 *       (optionally drop to UID first) create a socket; exit 0 if it was
 *       created, else print the error and exit 1.  With HOLD_SECONDS keep it
 *       open that long, so the protocol module stays in use.
 *   -u UID: like a login session, first join the cgroup
 *       /user.slice/user-UID.slice when cgroup2 is mounted on /sys/fs/cgroup
 *       (best effort), then take gid UID and uid UID.
 *   trigger [-u UID] hold PATH SECONDS
 *       open PATH read-write and keep it open.  For a tun device also
 *       attach a tap interface "kdtun0", so the module is really in use.
 *       Prints "ready" once the file is open (and the interface exists).
 *   trigger ms
 *       print CLOCK_MONOTONIC in milliseconds (busybox has no such date).
 *   trigger [-u UID] queue KEY MODE
 *       create a SysV message queue at KEY (decimal or 0x hex) with MODE
 *       (octal), as a squatter would; prints its id.
 *   trigger [-u UID] msgget KEY
 *       open the existing message queue at KEY (msgget without IPC_CREAT),
 *       as a client would; prints its id, or the error and exits 1.
 *   trigger rmqueue ID
 *       remove the message queue ID (busybox has no ipcrm).
 *   trigger pid-above N
 *       make the next pid above N (set kernel.pid_max first): through
 *       ns_last_pid where the kernel has it, else by forking and reaping
 *       children until one gets a pid above N.
 *   trigger nlbind GROUP
 *       bind a NETLINK_NETFILTER socket to GROUP: nfnetlink asks for its
 *       subsystem with request_module_nowait() and bind returns at once.
 *   trigger finit FILE
 *       load the module FILE with finit_module(2), as kmod 31 and later
 *       do (MODULE_INIT_COMPRESSED_FILE for .xz/.zst/.gz): the guest's
 *       kmod 30 loads compressed modules with init_module(2).  Prints
 *       "loaded", or the error and exits 1.
 *   trigger init FILE
 *       load the module FILE (uncompressed) with init_module(2): an image
 *       from memory, as loaders do when finit_module(2) fails.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <linux/netlink.h>
#include <sys/ioctl.h>
#include <sys/msg.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void usage(void)
{
	fputs("usage: trigger [-u UID] socket FAMILY TYPE PROTO [HOLD_SECONDS]\n"
	      "       trigger [-u UID] hold PATH SECONDS\n"
	      "       trigger ms\n"
	      "       trigger [-u UID] queue KEY MODE\n"
	      "       trigger [-u UID] msgget KEY\n"
	      "       trigger rmqueue ID\n"
	      "       trigger pid-above N\n"
	      "       trigger nlbind GROUP\n"
	      "       trigger finit FILE\n"
	      "       trigger init FILE\n",
	      stderr);
	exit(2);
}

/* Parse a non-negative decimal number or die with usage. */
static long num(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 0);
	if (errno || *s == '\0' || *end != '\0' || v < 0)
		usage();
	return v;
}

/* Best effort: a requester's cgroup is part of what kerneld reports. */
static void join_user_cgroup(long uid)
{
	char dir[96], procs[128];
	FILE *f;

	if (access("/sys/fs/cgroup/cgroup.procs", W_OK) != 0)
		return;
	mkdir("/sys/fs/cgroup/user.slice", 0755);
	snprintf(dir, sizeof(dir), "/sys/fs/cgroup/user.slice/user-%ld.slice", uid);
	mkdir(dir, 0755);
	snprintf(procs, sizeof(procs), "%s/cgroup.procs", dir);
	f = fopen(procs, "w");
	if (f) {
		fprintf(f, "%d\n", (int)getpid());
		fclose(f);
	}
}

static void drop_to(long uid)
{
	join_user_cgroup(uid);
	/* Group first: after setuid we could no longer change it. */
	if (setgroups(0, NULL) != 0 || setgid((gid_t)uid) != 0 ||
	    setuid((uid_t)uid) != 0) {
		fprintf(stderr, "trigger: cannot become uid %ld: %s\n", uid,
			strerror(errno));
		exit(1);
	}
}

static int do_socket(char **argv, int argc)
{
	int fd;

	if (argc != 3 && argc != 4)
		usage();
	fd = socket((int)num(argv[0]), (int)num(argv[1]), (int)num(argv[2]));
	if (fd < 0) {
		printf("socket: %s\n", strerror(errno));
		return 1;
	}
	if (argc == 4) {
		puts("ready");
		fflush(stdout);
		sleep((unsigned)num(argv[3]));
	}
	close(fd);
	return 0;
}

static int do_hold(char **argv, int argc)
{
	const char *path;
	size_t len;
	int fd;

	if (argc != 2)
		usage();
	path = argv[0];
	fd = open(path, O_RDWR);
	if (fd < 0) {
		printf("open %s: %s\n", path, strerror(errno));
		return 1;
	}
	len = strlen(path);
	if (len >= 4 && strcmp(path + len - 4, "/tun") == 0) {
		struct ifreq ifr;

		memset(&ifr, 0, sizeof(ifr));
		ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
		strncpy(ifr.ifr_name, "kdtun0", IFNAMSIZ - 1);
		if (ioctl(fd, TUNSETIFF, &ifr) != 0) {
			printf("TUNSETIFF: %s\n", strerror(errno));
			return 1;
		}
	}
	puts("ready");
	fflush(stdout);
	sleep((unsigned)num(argv[1]));
	close(fd);
	return 0;
}

static int do_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	printf("%lld\n", (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000);
	return 0;
}

static int do_queue(char **argv, int argc)
{
	char *end;
	long mode;
	int id;

	if (argc != 2)
		usage();
	mode = strtol(argv[1], &end, 8);
	if (*end != '\0')
		usage();
	id = msgget((key_t)strtoul(argv[0], NULL, 0), IPC_CREAT | IPC_EXCL | (int)mode);
	if (id < 0) {
		printf("msgget: %s\n", strerror(errno));
		return 1;
	}
	printf("%d\n", id);
	return 0;
}

static int do_msgget(char **argv, int argc)
{
	int id;

	if (argc != 1)
		usage();
	id = msgget((key_t)strtoul(argv[0], NULL, 0), 0);
	if (id < 0) {
		printf("msgget: %s\n", strerror(errno));
		return 1;
	}
	printf("%d\n", id);
	return 0;
}

static int do_rmqueue(char **argv, int argc)
{
	if (argc != 1)
		usage();
	if (msgctl((int)num(argv[0]), IPC_RMID, NULL) != 0) {
		printf("msgctl IPC_RMID: %s\n", strerror(errno));
		return 1;
	}
	return 0;
}

static int do_pid_above(char **argv, int argc)
{
	long n;
	pid_t p;
	int fd;

	if (argc != 1)
		usage();
	n = num(argv[0]);
	/* ns_last_pid (CONFIG_CHECKPOINT_RESTORE with PID_NS) sets the last
	 * pid given out at once; forking N times takes minutes under
	 * emulation on a busy host. */
	fd = open("/proc/sys/kernel/ns_last_pid", O_WRONLY);
	if (fd >= 0) {
		char buf[24];
		int len = snprintf(buf, sizeof(buf), "%ld", n);
		int ok = write(fd, buf, len) == len;

		close(fd);
		if (ok)
			return 0;
	}
	do {
		p = vfork();
		if (p == 0)
			_exit(0);
		if (p < 0) {
			printf("vfork: %s\n", strerror(errno));
			return 1;
		}
		waitpid(p, NULL, 0);
	} while (p <= n);
	return 0;
}

static int do_nlbind(char **argv, int argc)
{
	struct sockaddr_nl sa;
	int fd;

	if (argc != 1)
		usage();
	fd = socket(AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER);
	if (fd < 0) {
		printf("socket: %s\n", strerror(errno));
		return 1;
	}
	memset(&sa, 0, sizeof(sa));
	sa.nl_family = AF_NETLINK;
	sa.nl_groups = 1u << (num(argv[0]) - 1);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		printf("bind: %s\n", strerror(errno));
		return 1;
	}
	close(fd);
	return 0;
}

static int do_finit(char **argv, int argc)
{
	size_t len;
	int fd, flags = 0;

	if (argc != 1)
		usage();
	fd = open(argv[0], O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		printf("open %s: %s\n", argv[0], strerror(errno));
		return 1;
	}
	len = strlen(argv[0]);
	if (len > 3 && strcmp(argv[0] + len - 3, ".ko") != 0)
		flags = 4; /* MODULE_INIT_COMPRESSED_FILE */
	if (syscall(SYS_finit_module, fd, "", flags) != 0) {
		printf("finit_module: %s\n", strerror(errno));
		close(fd);
		return 1;
	}
	close(fd);
	puts("loaded");
	return 0;
}

static int do_init(char **argv, int argc)
{
	struct stat st;
	char *image;
	int fd;

	if (argc != 1)
		usage();
	fd = open(argv[0], O_RDONLY | O_CLOEXEC);
	if (fd < 0 || fstat(fd, &st) != 0) {
		printf("open %s: %s\n", argv[0], strerror(errno));
		return 1;
	}
	image = malloc((size_t)st.st_size);
	if (!image || read(fd, image, (size_t)st.st_size) != st.st_size) {
		printf("read %s: %s\n", argv[0], strerror(errno));
		return 1;
	}
	close(fd);
	if (syscall(SYS_init_module, image, (unsigned long)st.st_size, "") != 0) {
		printf("init_module: %s\n", strerror(errno));
		return 1;
	}
	puts("loaded");
	return 0;
}

int main(int argc, char **argv)
{
	argv++;
	argc--;
	if (argc >= 2 && strcmp(argv[0], "-u") == 0) {
		drop_to(num(argv[1]));
		argv += 2;
		argc -= 2;
	}
	if (argc < 1)
		usage();
	if (strcmp(argv[0], "socket") == 0)
		return do_socket(argv + 1, argc - 1);
	if (strcmp(argv[0], "hold") == 0)
		return do_hold(argv + 1, argc - 1);
	if (strcmp(argv[0], "ms") == 0 && argc == 1)
		return do_ms();
	if (strcmp(argv[0], "queue") == 0)
		return do_queue(argv + 1, argc - 1);
	if (strcmp(argv[0], "msgget") == 0)
		return do_msgget(argv + 1, argc - 1);
	if (strcmp(argv[0], "rmqueue") == 0)
		return do_rmqueue(argv + 1, argc - 1);
	if (strcmp(argv[0], "pid-above") == 0)
		return do_pid_above(argv + 1, argc - 1);
	if (strcmp(argv[0], "nlbind") == 0)
		return do_nlbind(argv + 1, argc - 1);
	if (strcmp(argv[0], "finit") == 0)
		return do_finit(argv + 1, argc - 1);
	if (strcmp(argv[0], "init") == 0)
		return do_init(argv + 1, argc - 1);
	usage();
	return 2;
}
