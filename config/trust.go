package config

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// CheckTrusted refuses a file that someone other than root or the user
// running tsadmin could change, as sshd's StrictModes does: tsadmin runs
// as root and kills processes, so a config, key list or audit log that any
// local user can rewrite (or swap, through a directory of theirs) is a way
// to root. fi is the open file's own stat (after any symlink); path is the
// name it was opened by, whose directories are checked too, up to the
// root, through any symlink. A file or directory may not be writable by
// everyone (a directory with the sticky bit, as /tmp, may), and must
// belong to root or to the running user.
func CheckTrusted(path string, fi os.FileInfo) error {
	if err := checkOwner(path, fi, false); err != nil {
		return err
	}
	// Every directory up to the root, of the path as given and as its
	// symlinks resolve: whoever may change any of them may swap the file.
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return err
	}
	for _, p := range []string{path, real} {
		abs, err := filepath.Abs(p)
		if err != nil {
			return err
		}
		for dir := filepath.Dir(abs); ; dir = filepath.Dir(dir) {
			di, err := os.Stat(dir)
			if err != nil {
				return err
			}
			if err := checkOwner(dir, di, true); err != nil {
				return err
			}
			if dir == filepath.Dir(dir) {
				break
			}
		}
	}
	return nil
}

func checkOwner(path string, fi os.FileInfo, isDir bool) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if uid := int(st.Uid); uid != 0 && uid != os.Getuid() {
		return fmt.Errorf("%s belongs to uid %d, not to root or the user running tsadmin: refused", path, uid)
	}
	if fi.Mode().Perm()&0o002 != 0 && !(isDir && fi.Mode()&os.ModeSticky != 0) {
		return fmt.Errorf("%s is writable by every user (mode %04o): refused; chmod o-w it", path, fi.Mode().Perm())
	}
	return nil
}
