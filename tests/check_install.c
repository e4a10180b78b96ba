/*
 * make install and make uninstall, run from the build tree into a scratch
 * DESTDIR: where each file goes, that the installed files name the paths
 * configure chose, that the units go where systemd reads them for the
 * prefix, and that an administrator's edited configuration survives both a
 * second install and an uninstall.
 *
 * The directories come from the Makefile (AM_TESTS_ENVIRONMENT): OP_PREFIX,
 * OP_SBINDIR, OP_SYSCONFDIR, OP_MANDIR, OP_UNITDIR, and TOP_BUILDDIR and
 * OP_MAKE to run make with.
 */
#include "config.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <check.h>

#include "harness.h"

#define INST_MAKE_MS 300000

static const char *
inst_env(const char *name)
{
	const char *v = getenv(name);

	H_ASSERT(v != NULL && *v != '\0', "%s is not set (make check sets it)",
	    name);
	return v;
}

/* DESTDIR + the configured dir + name. */
static char *
inst_path(const char *dest, const char *dir_env, const char *name)
{
	return harness_strf("%s%s/%s", dest, inst_env(dir_env), name);
}

/*
 * Runs `make -C TOP_BUILDDIR TARGET DESTDIR=dest` and returns its stdout;
 * fails the test unless make exits 0.  The make running the tests is not
 * asked to share its jobs: MAKEFLAGS and its kin are left out.
 */
static char *
inst_make(const char *target, const char *dest)
{
	struct harness_run run;
	const char *argv[16];
	char *out;
	int i = 0;

	argv[i++] = "/usr/bin/env";
	argv[i++] = "-u";
	argv[i++] = "MAKEFLAGS";
	argv[i++] = "-u";
	argv[i++] = "MFLAGS";
	argv[i++] = "-u";
	argv[i++] = "MAKELEVEL";
	argv[i++] = inst_env("OP_MAKE");
	argv[i++] = "--no-print-directory";
	argv[i++] = "-C";
	argv[i++] = inst_env("TOP_BUILDDIR");
	argv[i++] = target;
	argv[i++] = harness_strf("DESTDIR=%s", dest);
	argv[i] = NULL;
	harness_run(argv, INST_MAKE_MS, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "make %s DESTDIR=%s: status 0x%x\nstdout: %s\nstderr: %s", target,
	    dest, run.wstatus, run.out.data, run.err.data);
	out = harness_strf("%s", run.out.data);
	harness_run_free(&run);
	return out;
}

static int
inst_exists(const char *path)
{
	struct stat st;

	return lstat(path, &st) == 0;
}

/* Every regular file under dir, one path a line, or "" for none. */
static char *
inst_files(const char *dir)
{
	struct harness_run run;
	const char *argv[] = {"find", dir, "-type", "f", NULL};
	char *out;

	harness_run(argv, 30000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "find %s: %s", dir, run.err.data);
	out = harness_strf("%s", run.out.data);
	harness_run_free(&run);
	return out;
}

/* A path as the man pages write it: not hyphenated (\%), every hyphen a
 * \-, and a break point (\:) after every slash but a leading one. */
static char *
inst_roff(const char *path)
{
	struct harness_buf b = {NULL, 0, 0};
	const char *p;
	char *s;

	harness_buf_add(&b, "\\%", 2);
	for (p = path; *p != '\0'; p++) {
		if (*p == '-')
			harness_buf_add(&b, "\\", 1);
		harness_buf_add(&b, p, 1);
		if (*p == '/' && p > path && p[-1] != '/')
			harness_buf_add(&b, "\\:", 2);
	}
	s = harness_strf("%s", b.data);
	harness_buf_free(&b);
	return s;
}

static void
inst_no_placeholder(const char *path, const char *text)
{
	regex_t re;
	regmatch_t m;

	H_ASSERT(regcomp(&re, "@[A-Za-z_]+@", REG_EXTENDED) == 0, "regcomp");
	if (regexec(&re, text, 1, &m, 0) == 0) {
		regfree(&re);
		H_ASSERT(0, "%s keeps a placeholder: %.*s", path,
		    (int)(m.rm_eo - m.rm_so), text + m.rm_so);
	}
	regfree(&re);
}

/* The shipped configuration, as the build made it. */
static char *
inst_shipped_conf(void)
{
	char *path, *text;

	path =
	    harness_strf("%s/etc/ollama-pool.conf", inst_env("TOP_BUILDDIR"));
	text = harness_read_file(path, NULL);
	H_ASSERT(text != NULL, "%s: %s", path, strerror(errno));
	return text;
}

/* ---- what goes where -------------------------------------------------- */

/* What make install puts where, and what each must name. */
static const struct inst_file {
	const char *dir_env; /* the directory's variable */
	const char *name;
	int exec; /* 1: an executable */
	int roff; /* 1: paths are written as roff (\-) */
	const char *names[2]; /* directories (by variable) it must name */
} inst_files_table[] = {
    {"OP_SBINDIR", "ollama-pool", 1, 0, {NULL, NULL}},
    {"OP_UNITDIR", "ollama-pool.service", 0, 0,
        {"OP_SBINDIR", "OP_SYSCONFDIR"}},
    {"OP_UNITDIR", "ollama-pool.socket", 0, 0, {NULL, NULL}},
    {"OP_MANDIR", "man8/ollama-pool.8", 0, 1, {"OP_SYSCONFDIR", "OP_UNITDIR"}},
    {"OP_MANDIR", "man5/ollama-pool.conf.5", 0, 1, {"OP_SYSCONFDIR", NULL}},
    {"OP_SYSCONFDIR", "ollama-pool.conf", 0, 0, {"OP_SYSCONFDIR", NULL}},
};
#define N_INST_FILES (sizeof inst_files_table / sizeof inst_files_table[0])

static void
inst_check_file(const char *dest, const struct inst_file *f)
{
	char *path = inst_path(dest, f->dir_env, f->name), *text, *want;
	struct stat st;
	int i;

	H_ASSERT(stat(path, &st) == 0 && S_ISREG(st.st_mode),
	    "make install left no %s: %s", path, strerror(errno));
	H_ASSERT(!f->exec || (st.st_mode & 0111) == 0111,
	    "%s is not executable: mode %o", path, (unsigned)st.st_mode);
	if (f->exec)
		return;
	text = harness_read_file(path, NULL);
	H_ASSERT(text != NULL, "%s: %s", path, strerror(errno));
	inst_no_placeholder(path, text);
	for (i = 0; i < 2 && f->names[i] != NULL; i++) {
		want = f->roff ? inst_roff(inst_env(f->names[i]))
		               : harness_strf("%s/", inst_env(f->names[i]));
		H_ASSERT(strstr(text, want) != NULL, "%s does not name %s (%s)",
		    path, want, f->names[i]);
	}
}

/* The unit's ExecStart= line, exactly. */
static void
inst_check_execstart(const char *dest)
{
	char *path = inst_path(dest, "OP_UNITDIR", "ollama-pool.service");
	char *text = harness_read_file(path, NULL), *want;

	H_ASSERT(text != NULL, "%s: %s", path, strerror(errno));
	want =
	    harness_strf("\nExecStart=%s/ollama-pool -c %s/ollama-pool.conf\n",
	        inst_env("OP_SBINDIR"), inst_env("OP_SYSCONFDIR"));
	H_ASSERT_CONTAINS(text, want);
}

/* The installed binary's --help names the configured file. */
static void
inst_check_help(const char *dest)
{
	struct harness_run run;
	const char *argv[3];
	char *want;

	argv[0] = inst_path(dest, "OP_SBINDIR", "ollama-pool");
	argv[1] = "--help";
	argv[2] = NULL;
	harness_run(argv, 30000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "%s --help: 0x%x %s", argv[0], run.wstatus, run.err.data);
	want =
	    harness_strf(" %s/ollama-pool.conf\n", inst_env("OP_SYSCONFDIR"));
	H_ASSERT(strstr(run.out.data, want) != NULL, "--help does not name%s%s",
	    want, run.out.data);
	harness_run_free(&run);
}

START_TEST(test_install_layout)
{
	char *dest, *out, *conf, *text;
	size_t i;

	H_BEGIN();
	dest = harness_tmpdir();
	out = inst_make("install", dest);
	for (i = 0; i < N_INST_FILES; i++)
		inst_check_file(dest, &inst_files_table[i]);
	inst_check_execstart(dest);
	inst_check_help(dest);

	/* The configuration is the shipped one, with no sample beside it. */
	conf = inst_path(dest, "OP_SYSCONFDIR", "ollama-pool.conf");
	text = harness_read_file(conf, NULL);
	H_ASSERT(text != NULL && strcmp(text, inst_shipped_conf()) == 0,
	    "%s is not the shipped configuration", conf);
	H_ASSERT(strstr(text,
	             harness_strf("ollama-pool -t -c %s/ollama-pool.conf",
	                 inst_env("OP_SYSCONFDIR"))) != NULL,
	    "%s does not say how to check itself at its own path", conf);
	H_ASSERT(!inst_exists(harness_strf("%s.sample", conf)),
	    "a first install left %s.sample", conf);
	H_ASSERT(strstr(out, ".sample") == NULL,
	    "a first install speaks of a sample:\n%s", out);

	/* Over the shipped file, a second install needs no sample. */
	out = inst_make("install", dest);
	H_ASSERT(strstr(out, ".sample") == NULL &&
	        !inst_exists(harness_strf("%s.sample", conf)),
	    "installing over the shipped configuration made a sample:\n%s",
	    out);
}
END_TEST

/*
 * Without --with-systemdsystemunitdir the units go to the folder systemd
 * reads for the prefix: the distribution's (pkg-config systemd) for /usr,
 * else PREFIX/lib/systemd/system, which systemd reads for /usr/local.
 */
START_TEST(test_install_unit_dir)
{
	struct harness_run run;
	const char *argv[6], *prefix = inst_env("OP_PREFIX");
	const char *unitdir = inst_env("OP_UNITDIR");
	char *want, *line;

	H_BEGIN();
	argv[0] = harness_strf("%s/config.status", inst_env("TOP_BUILDDIR"));
	argv[1] = "--config";
	argv[2] = NULL;
	harness_run(argv, 30000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "config.status --config: 0x%x %s", run.wstatus, run.err.data);
	if (strstr(run.out.data, "--with-systemdsystemunitdir") != NULL) {
		fprintf(stderr, "units: %s, as configure was told\n", unitdir);
		harness_run_free(&run);
		return;
	}
	harness_run_free(&run);

	want = harness_strf("%s/lib/systemd/system", prefix);
	if (strcmp(prefix, "/usr") == 0) {
		argv[0] = "pkg-config";
		argv[1] = "--variable=systemdsystemunitdir";
		argv[2] = "systemd";
		argv[3] = NULL;
		harness_run(argv, 30000, &run);
		if (run.out.len > 1)
			want = harness_strf("%.*s",
			    (int)strcspn(run.out.data, "\n"), run.out.data);
		harness_run_free(&run);
	}
	H_ASSERT_STR_EQ(unitdir, want);

	/* And systemd reads it, for the prefixes it knows of. */
	if (strcmp(prefix, "/usr") != 0 && strcmp(prefix, "/usr/local") != 0)
		return;
	argv[0] = "systemd-analyze";
	argv[1] = "unit-paths";
	argv[2] = NULL;
	harness_run(argv, 30000, &run);
	H_ASSERT(!run.timed_out && WIFEXITED(run.wstatus) &&
	        WEXITSTATUS(run.wstatus) == 0,
	    "systemd-analyze unit-paths (package systemd): 0x%x %s",
	    run.wstatus, run.err.data);
	line = harness_strf("\n%s", run.out.data);
	H_ASSERT(strstr(line, harness_strf("\n%s\n", unitdir)) != NULL,
	    "systemd does not read units from %s:\n%s", unitdir, run.out.data);
	harness_run_free(&run);
}
END_TEST

/* ---- the administrator's configuration --------------------------------- */

static const char inst_edit[] = "\n# edited by the administrator\n"
                                "[upstream]\nurl = http://127.0.0.1:1\n";

START_TEST(test_install_keeps_edited_conf)
{
	char *dest, *conf, *sample, *edited, *out, *text, *left, *msg;
	int round;

	H_BEGIN();
	dest = harness_tmpdir();
	inst_make("install", dest);
	conf = inst_path(dest, "OP_SYSCONFDIR", "ollama-pool.conf");
	sample = harness_strf("%s.sample", conf);
	edited = harness_strf("%s%s", inst_shipped_conf(), inst_edit);
	harness_write_file(
	    harness_strf("%s%s", dest, inst_env("OP_SYSCONFDIR")),
	    "ollama-pool.conf", edited);

	/* Twice: the second finds the sample already there. */
	msg = harness_strf(
	    "kept the existing %s; the new sample is %s\n", conf, sample);
	for (round = 0; round < 2; round++) {
		out = inst_make("install", dest);
		H_ASSERT(strstr(out, msg) != NULL,
		    "install %d does not say\n%s\nit says:\n%s", round + 2, msg,
		    out);
		text = harness_read_file(conf, NULL);
		H_ASSERT(text != NULL && strcmp(text, edited) == 0,
		    "install %d changed the edited %s:\n%s", round + 2, conf,
		    text ? text : strerror(errno));
		text = harness_read_file(sample, NULL);
		H_ASSERT(text != NULL && strcmp(text, inst_shipped_conf()) == 0,
		    "%s is not the shipped configuration", sample);
	}

	/* Uninstall: the edited file stays, alone; everything else goes. */
	out = inst_make("uninstall", dest);
	H_ASSERT_CONTAINS(out, harness_strf("kept %s", conf));
	text = harness_read_file(conf, NULL);
	H_ASSERT(text != NULL && strcmp(text, edited) == 0,
	    "uninstall removed or changed the edited %s", conf);
	left = inst_files(dest);
	H_ASSERT_STR_EQ(left, harness_strf("%s\n", conf));

	/* Installed again over it, then put back to the shipped text by the
	 * administrator: uninstall now takes it, and its sample, too. */
	inst_make("install", dest);
	H_ASSERT(inst_exists(sample), "no %s over the edited file", sample);
	harness_write_file(
	    harness_strf("%s%s", dest, inst_env("OP_SYSCONFDIR")),
	    "ollama-pool.conf", inst_shipped_conf());
	inst_make("uninstall", dest);
	left = inst_files(dest);
	H_ASSERT(*left == '\0', "make uninstall left:\n%s", left);
}
END_TEST

/* ---- the suite -------------------------------------------------------- */

static Suite *
install_suite(void)
{
	Suite *s;
	TCase *tc;

	s = suite_create("install");

	tc = harness_tcase(s, "layout", 300);
	tcase_add_test(tc, test_install_layout);
	tcase_add_test(tc, test_install_unit_dir);

	tc = harness_tcase(s, "conf", 300);
	tcase_add_test(tc, test_install_keeps_edited_conf);

	return s;
}

int
main(void)
{
	return harness_main(install_suite());
}
