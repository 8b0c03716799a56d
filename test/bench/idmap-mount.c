/*
 * The other way to give a container of uid range k its files (not used by archway; measured by
 * test/bench/launch.ts to compare with the per-range copies): an idmapped mount of the stored
 * tree, mapping on-disk ids (range 0) to the range's, attached at DST.
 *
 *   idmap-mount SRC DST USERNS     USERNS: a user namespace file whose map is "base hostId size"
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/mount.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
  if (argc != 4) { fprintf(stderr, "usage: idmap-mount SRC DST USERNS\n"); return 2; }
  int t = syscall(SYS_open_tree, AT_FDCWD, argv[1], OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
  if (t < 0) { perror("open_tree"); return 1; }
  int u = open(argv[3], O_RDONLY | O_CLOEXEC);
  if (u < 0) { perror("userns"); return 1; }
  struct mount_attr a = { .attr_set = MOUNT_ATTR_IDMAP, .userns_fd = u };
  if (syscall(SYS_mount_setattr, t, "", AT_EMPTY_PATH, &a, sizeof a) < 0) { perror("mount_setattr"); return 1; }
  if (syscall(SYS_move_mount, t, "", AT_FDCWD, argv[2], MOVE_MOUNT_F_EMPTY_PATH) < 0) { perror("move_mount"); return 1; }
  return 0;
}
