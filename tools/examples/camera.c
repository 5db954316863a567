/* SPDX-License-Identifier: MIT */
/* A camera-like broadcast service: one publisher of 4 MiB frames, subscribers of different
 * speeds that each see every frame they keep up with, in place (no copy).
 *
 *   camera pub NAME FRAMES SUBSCRIBERS   wait for SUBSCRIBERS subscribers, then publish FRAMES
 *                                        frames at 100 per second and leave
 *   camera sub NAME MS                   take every frame, spending MS milliseconds on each;
 *                                        print what was received and lost at the end
 *
 * The publisher lends itself a 4 MiB chunk of its payload pool (abd_service_loan), writes the
 * frame in place and sends it: one copy of each frame in memory, whatever the number of
 * subscribers. Policy OVERWRITE: a subscriber that falls behind never holds the camera back; it
 * skips frames and abd_service_lost() counts them. A frame being read stays intact (its chunk
 * is not reused while a subscriber holds it). A subscriber that dies costs the others nothing.
 *
 * Exit: 0 when every frame received was intact and received + lost = FRAMES (sub), or the
 * frames were published (pub); 1 usage; 2 an abd call failed; 3 a damaged frame. */
#include <abd/abd.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FRAME_BYTES (4u << 20)
#define PAGE 4096u

struct frame_head {
	uint64_t seq;
	uint32_t width, height;
};

/* The frame's content: one byte per page, derived from the frame's number. */
static unsigned char pixel(uint64_t seq, size_t page)
{
	return (unsigned char)(seq * 31 + page);
}

static void sleep_ms(long ms)
{
	struct timespec d = {ms / 1000, (ms % 1000) * 1000000};
	nanosleep(&d, NULL);
}

static int publish(const char *name, uint64_t frames, unsigned subscribers)
{
	struct abd_service_config cfg = {.capacity = 8, .slot_size = FRAME_BYTES};
	struct abd_broadcast_opts opts = {.subscribers = subscribers + 1, .history = 0,
	                                  .policy = ABD_BROADCAST_OVERWRITE};
	struct abd_service *cam;
	int e = abd_service_publish_broadcast(name, &cfg, &opts, 0, &cam);
	if (e < 0) {
		fprintf(stderr, "publish %s: %s\n", name, strerror(-e));
		return 2;
	}
	/* wait for the audience (and answer their opens meanwhile: run the reactor) */
	struct abd_service_stats st;
	for (int i = 0; i < 1000; i++) {
		if (abd_service_stats(cam, &st) == 0 && st.consumers >= subscribers)
			break;
		abd_reactor_run_once(abd_service_reactor(cam), 10000000);
	}
	for (uint64_t seq = 0; seq < frames; seq++) {
		void *buf;
		e = abd_service_loan(cam, FRAME_BYTES, &buf, -1);
		if (e < 0) {
			fprintf(stderr, "loan: %s\n", strerror(-e));
			abd_service_close(cam);
			return 2;
		}
		unsigned char *f = buf;
		for (size_t page = 1; page < FRAME_BYTES / PAGE; page++)
			f[page * PAGE] = pixel(seq, page);
		struct frame_head h = {seq, 1024, 1024};
		memcpy(f, &h, sizeof(h));
		e = abd_service_send(cam, buf, FRAME_BYTES);
		if (e < 0) {
			fprintf(stderr, "send: %s\n", strerror(-e));
			abd_service_close(cam);
			return 2;
		}
		abd_reactor_run_once(abd_service_reactor(cam), 0); /* newcomers, departures */
		sleep_ms(10);
	}
	printf("camera: %llu frames published\n", (unsigned long long)frames);
	abd_service_close(cam); /* subscribers drain what is left, then see EPIPE */
	return 0;
}

static int subscribe(const char *name, long ms, uint64_t frames)
{
	struct abd_service *cam;
	int e = abd_service_open(name, NULL, ABD_SERVICE_CONSUMER, 10000000000ll, &cam);
	if (e < 0) {
		fprintf(stderr, "open %s: %s\n", name, strerror(-e));
		return 2;
	}
	uint64_t got = 0, damaged = 0;
	for (;;) {
		const void *p;
		size_t len;
		e = abd_service_peek(cam, &p, &len, -1);
		if (e == -EPIPE)
			break;
		if (e < 0) {
			fprintf(stderr, "peek: %s\n", strerror(-e));
			abd_service_close(cam);
			return 2;
		}
		const unsigned char *f = p;
		struct frame_head h;
		memcpy(&h, f, sizeof(h));
		for (size_t page = 1; page < FRAME_BYTES / PAGE && len == FRAME_BYTES; page++)
			if (f[page * PAGE] != pixel(h.seq, page)) {
				damaged++;
				break;
			}
		damaged += len != FRAME_BYTES;
		got++;
		if (ms > 0)
			sleep_ms(ms); /* "processing", with the frame still held */
		(void)abd_service_release(cam);
	}
	int64_t lost = abd_service_lost(cam);
	printf("subscriber (%ld ms a frame): %llu frames received, %lld lost, %llu damaged\n", ms,
	       (unsigned long long)got, (long long)lost, (unsigned long long)damaged);
	abd_service_close(cam);
	if (damaged)
		return 3;
	return frames == 0 || got + (uint64_t)lost == frames ? 0 : 3;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "pub"))
		return publish(argv[2], strtoull(argv[3], NULL, 0), (unsigned)strtoul(argv[4], NULL, 0));
	if ((argc == 4 || argc == 5) && !strcmp(argv[1], "sub"))
		return subscribe(argv[2], strtol(argv[3], NULL, 0),
		                 argc == 5 ? strtoull(argv[4], NULL, 0) : 0);
	fprintf(stderr, "usage: camera pub NAME FRAMES SUBSCRIBERS | camera sub NAME MS [FRAMES]\n");
	return 1;
}
