/*
 * A null milter on Sendmail's libmilter (Debian: libmilter-dev): the C baseline that
 * examples/milter-bench.rs compares bogus-helo-milter with. Its connect, helo, mail and
 * rcpt callbacks only answer "continue", like examples/null-milter.rs.
 *
 *   gcc -O2 -o null-libmilter bench/null-libmilter.c -lmilter -lpthread
 *   ./null-libmilter inet:8899@127.0.0.1
 *
 * bench/protocol-bench builds it into a temporary directory and milter-bench runs it.
 */
#include <libmilter/mfapi.h>
#include <stdio.h>
#include <stdlib.h>

static sfsistat on_connect(SMFICTX *ctx, char *host, _SOCK_ADDR *addr)
{
	(void)ctx;
	(void)host;
	(void)addr;
	return SMFIS_CONTINUE;
}

static sfsistat on_helo(SMFICTX *ctx, char *helo)
{
	(void)ctx;
	(void)helo;
	return SMFIS_CONTINUE;
}

static sfsistat on_mail(SMFICTX *ctx, char **argv)
{
	(void)ctx;
	(void)argv;
	return SMFIS_CONTINUE;
}

static sfsistat on_rcpt(SMFICTX *ctx, char **argv)
{
	(void)ctx;
	(void)argv;
	return SMFIS_CONTINUE;
}

static struct smfiDesc desc = {
	.xxfi_name = "null-libmilter",
	.xxfi_version = SMFI_VERSION,
	.xxfi_flags = 0,
	.xxfi_connect = on_connect,
	.xxfi_helo = on_helo,
	.xxfi_envfrom = on_mail,
	.xxfi_envrcpt = on_rcpt,
};

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s inet:PORT@127.0.0.1\n", argv[0]);
		return 2;
	}
	if (smfi_setconn(argv[1]) == MI_FAILURE || smfi_setbacklog(4096) == MI_FAILURE ||
	    smfi_register(desc) == MI_FAILURE) {
		fprintf(stderr, "null-libmilter: cannot set up %s\n", argv[1]);
		return 1;
	}
	/* Runs until SIGTERM, SIGINT or SIGHUP. */
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
