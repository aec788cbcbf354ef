package io.github.lora4j.io;

import io.github.lora4j.io.PeftAdapterFiles.FileOps;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.channels.SeekableByteChannel;
import java.nio.channels.WritableByteChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.PosixFileAttributeView;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.locks.ReentrantLock;
import java.util.regex.Pattern;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * lora4j's crash-safe, bounded file I/O: the machinery under {@link PeftAdapterFiles} and
 * {@code LoraTrainer.saveState}/{@code loadState}, public so that both packages share one copy of it, and for
 * callers saving files of their own beside an adapter.
 *
 * <h2>Saving a group of files: {@link #write}</h2>
 * The files of one save (an adapter's model and config, a trainer's tensors and JSON) are replaced as one unit:
 * <ol>
 *   <li>One save per directory at a time, within a JVM and across processes: a lock keyed by the directory itself
 *       (its file key, i.e. device and inode, so the same directory reached through a symbolic link or a bind mount
 *       is one directory), then an OS file lock ({@link FileChannel#lock()}) on {@value #LOCK_FILE} in the
 *       directory. A second save waits for the first. The lock file stays (empty); it holds nothing, and can be
 *       deleted while no save runs. On a file system without POSIX locks (some NFS set-ups) the OS lock is
 *       skipped, and saves from two processes at once are not excluded there.</li>
 *   <li>Every file is first written to a temporary file of its own in the directory
 *       ({@code .<name>.<random>.lora4j-tmp}, a name no other save uses) and forced to disk. New files get the mode
 *       the umask gives (as {@code open(2)} with 0666; usually 0644), replaced files keep theirs.</li>
 *   <li>Each existing target but the last gets a backup ({@code .<name>.<random>.lora4j-old}, a hard link where
 *       the file system allows it); then the temporaries are renamed over their targets in order
 *       ({@code ATOMIC_MOVE}: a reader sees each file old or new, never half-written) and the directory is fsynced.
 *       If a rename fails, the files renamed before it are put back from their backups (or removed, if they did not
 *       exist), so the directory holds the old group again.</li>
 *   <li>Temporary files and backups of a killed save are removed by the next save into the directory, under the OS
 *       lock, when no other save can own them.</li>
 * </ol>
 * What remains: a crash of the process between two renames leaves new and old files side by side; readers that need
 * to detect it store one id in every file of a group (the trainer does). A reader running during the renames can
 * see such a mix too: saves do not lock readers out.
 *
 * <h2>Reading</h2>
 * {@link #requireRegularFile} refuses FIFOs, devices and directories (also behind a symbolic link) before anything
 * is opened; {@link #readBounded} reads at most a given number of bytes; {@link #readSafetensors} reads a safetensors
 * file with a bounded, streamed header and lets the caller check every declared tensor before any is decoded.
 */
public final class SafeFiles {

    /** The lock file a save creates in its directory and locks while it writes (empty; kept). */
    public static final String LOCK_FILE = ".lora4j.lock";

    static final String TMP_SUFFIX = ".lora4j-tmp";
    static final String BACKUP_SUFFIX = ".lora4j-old";

    /** One lock per directory (by file key or real path) for the saves of this JVM. */
    private static final Map<Object, ReentrantLock> DIR_LOCKS = new ConcurrentHashMap<>();

    /** The renames of saves made through the public {@link #write}; tests replace it on their thread only. */
    static final ThreadLocal<FileOps> OPS = ThreadLocal.withInitial(() -> FileOps.ATOMIC);

    private SafeFiles() {
    }

    /**
     * What one file of a save holds: writes it into a fresh temporary file (the channel is forced and closed after).
     */
    @FunctionalInterface
    public interface Content {
        /**
         * Writes the whole file.
         *
         * @param ch the temporary file, empty, positioned at 0; not to be closed here
         * @throws IOException if writing fails; the save then changes no target
         */
        void writeTo(WritableByteChannel ch) throws IOException;
    }

    /**
     * A file holding {@code bytes}.
     *
     * @param bytes the file's contents; not copied, not modified
     * @return the content
     * @throws NullPointerException if {@code bytes} is {@code null}
     */
    public static Content bytes(byte[] bytes) {
        Objects.requireNonNull(bytes, "bytes must not be null");
        return ch -> {
            ByteBuffer b = ByteBuffer.wrap(bytes);
            while (b.hasRemaining()) {
                ch.write(b);
            }
        };
    }

    /**
     * A safetensors file of {@code tensors} (in the map's order), each in its own type: FLOAT arrays as {@code F32},
     * DOUBLE arrays as {@code F64}, with {@code metadata} as {@code __metadata__}. Values are encoded when the save
     * writes, from the arrays as they are then; pass copies of arrays that may change meanwhile.
     *
     * @param tensors  name to FLOAT or DOUBLE array (any shape, order or view); not {@code null}, no null values
     * @param metadata the string map stored as {@code __metadata__} (empty for none); not {@code null}
     * @return the content
     * @throws NullPointerException if an argument is {@code null}
     */
    public static Content safetensors(Map<String, INDArray> tensors, Map<String, String> metadata) {
        Map<String, INDArray> t = Collections.unmodifiableMap(new LinkedHashMap<>(tensors));
        Map<String, String> m = Collections.unmodifiableMap(new LinkedHashMap<>(metadata));
        return ch -> Safetensors.write(ch, t, m, null);
    }

    /**
     * Replaces the files {@code files} names in {@code dir} (created if absent) as one save, in the map's order (see
     * the class comment: locks, temporaries, modes, backups, put back on failure).
     *
     * @param dir   the directory; not {@code null}
     * @param files file name (no path separator) to content, in the order to rename them; at least one
     * @throws IOException              if writing fails; the targets then hold what they held before, unless putting
     *                                  one back failed too, which the message says
     * @throws IllegalArgumentException if {@code files} is empty or a name is not a plain file name
     * @throws NullPointerException     if an argument, name or content is {@code null}
     */
    public static void write(Path dir, Map<String, Content> files) throws IOException {
        write(dir, files, OPS.get());
    }

    static void write(Path dir, Map<String, Content> files, FileOps ops) throws IOException {
        Objects.requireNonNull(dir, "dir must not be null");
        Objects.requireNonNull(files, "files must not be null");
        if (files.isEmpty()) {
            throw new IllegalArgumentException("files: expected at least one file to write, got none");
        }
        List<String> names = new ArrayList<>(files.keySet());
        for (String name : names) {
            Objects.requireNonNull(files.get(name), "content of " + name);
            if (name.isEmpty() || name.equals(".") || name.equals("..") || name.contains("/")
                    || name.contains(dir.getFileSystem().getSeparator()) || name.equals(LOCK_FILE)) {
                throw new IllegalArgumentException("file name '" + name + "': expected a plain file name in the "
                        + "directory, not '.', '..', " + LOCK_FILE + " or a path");
            }
        }
        Files.createDirectories(dir);
        // Checked before the lock file is made (a refused save leaves the directory as it was), and again under it.
        requireReplaceable(dir, names);
        ReentrantLock jvmLock = DIR_LOCKS.computeIfAbsent(dirKey(dir), k -> new ReentrantLock());
        jvmLock.lock();
        try (DirLock osLock = DirLock.acquire(dir)) {
            writeLocked(dir, names, files, ops, osLock.held());
        } finally {
            jvmLock.unlock();
        }
    }

    private static void writeLocked(Path dir, List<String> names, Map<String, Content> files, FileOps ops,
                                    boolean exclusive) throws IOException {
        List<Path> targets = requireReplaceable(dir, names);
        if (exclusive) {
            // Under the OS lock no other save runs here: whatever temporaries exist belong to killed saves.
            cleanStaleTemporaries(dir, names);
        }
        String token = Long.toHexString(ThreadLocalRandom.current().nextLong() | Long.MIN_VALUE);
        List<Path> temps = new ArrayList<>();
        List<Path> backups = new ArrayList<>(Collections.nCopies(names.size(), null));
        try {
            for (int i = 0; i < names.size(); i++) {
                Path tmp = createFresh(dir, names.get(i), token, TMP_SUFFIX);
                temps.add(tmp);
                try (FileChannel ch = FileChannel.open(tmp, StandardOpenOption.WRITE)) {
                    files.get(names.get(i)).writeTo(ch);
                    ch.force(true);
                }
                keepMode(targets.get(i), tmp);
            }
            for (int i = 0; i < names.size() - 1; i++) {
                if (Files.exists(targets.get(i), LinkOption.NOFOLLOW_LINKS)) {
                    backups.set(i, backUp(dir, names.get(i), token, targets.get(i)));
                }
            }
            // ATOMIC_MOVE is a rename(2) on POSIX: readers see the old file or the new one, never a mix.
            for (int i = 0; i < names.size(); i++) {
                try {
                    ops.move(temps.get(i), targets.get(i));
                } catch (IOException | RuntimeException e) {
                    putBack(dir, names, targets, backups, i, ops, e);
                    throw e;
                }
            }
            syncDirectory(dir);
        } finally {
            for (Path p : temps) {
                Files.deleteIfExists(p);
            }
            for (Path p : backups) {
                if (p != null) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    /** The targets, each a regular file (or a link to one) or absent. */
    private static List<Path> requireReplaceable(Path dir, List<String> names) throws IOException {
        List<Path> targets = new ArrayList<>();
        for (String name : names) {
            Path target = dir.resolve(name);
            if (Files.exists(target) && !Files.isRegularFile(target)) {
                throw new IOException("cannot replace " + target + ": expected a regular file or nothing, found "
                        + "a directory or special file");
            }
            targets.add(target);
        }
        return targets;
    }

    /** After rename {@code failed} failed: the targets renamed before it get their old files back, in reverse. */
    private static void putBack(Path dir, List<String> names, List<Path> targets, List<Path> backups, int failed,
                                FileOps ops, Exception cause) throws IOException {
        for (int j = failed - 1; j >= 0; j--) {
            try {
                if (backups.get(j) != null) {
                    ops.move(backups.get(j), targets.get(j));
                    backups.set(j, null);
                } else {
                    Files.delete(targets.get(j));
                }
            } catch (IOException | RuntimeException restore) {
                cause.addSuppressed(restore);
                Path kept = backups.get(j);
                backups.set(j, null); // kept, not deleted: it is the only copy of the old file
                throw new IOException("replacing " + targets.get(failed) + " failed and the old " + names.get(j)
                        + " could not be put back: " + dir + " now holds new " + names.subList(0, j + 1)
                        + " beside old " + names.subList(j + 1, names.size()) + "; save again"
                        + (kept == null ? "" : " (the old " + names.get(j) + " is kept as " + kept
                        + " until the next save into the directory)"), cause);
            }
        }
        syncDirectory(dir);
    }

    /** A hard link to {@code target} (or a copy where links are not supported), under a name no other save uses. */
    private static Path backUp(Path dir, String name, String token, Path target) throws IOException {
        Path backup = dir.resolve("." + name + "." + token + BACKUP_SUFFIX);
        try {
            Files.createLink(backup, target);
        } catch (UnsupportedOperationException | IOException noHardLinks) {
            Files.copy(target, backup, StandardCopyOption.COPY_ATTRIBUTES, StandardCopyOption.REPLACE_EXISTING);
        }
        return backup;
    }

    /** The identity of {@code dir} for the JVM lock: device and inode where the platform gives them. */
    private static Object dirKey(Path dir) throws IOException {
        Object key = Files.readAttributes(dir, BasicFileAttributes.class).fileKey();
        return key != null ? key : dir.toRealPath();
    }

    /**
     * The OS lock on {@value #LOCK_FILE}; not held where the file system offers none (the save then runs with the JVM
     * lock alone and leaves other temporaries alone). Closing it releases the lock and closes the file.
     */
    private static final class DirLock implements AutoCloseable {
        private final FileChannel channel;
        private final FileLock lock;

        private DirLock(FileChannel channel, FileLock lock) {
            this.channel = channel;
            this.lock = lock;
        }

        boolean held() {
            return lock != null;
        }

        /** Waits for the lock; the lock file is created if absent and never followed if it is a symbolic link. */
        static DirLock acquire(Path dir) throws IOException {
            Path lockFile = dir.resolve(LOCK_FILE);
            FileChannel ch;
            try {
                // READ + WRITE: opening a FIFO so does not block, and an exclusive lock needs a writable channel.
                ch = FileChannel.open(lockFile, StandardOpenOption.CREATE, StandardOpenOption.READ,
                        StandardOpenOption.WRITE, LinkOption.NOFOLLOW_LINKS);
            } catch (IOException | UnsupportedOperationException e) {
                return new DirLock(null, null);
            }
            try {
                if (!Files.readAttributes(lockFile, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS)
                        .isRegularFile()) {
                    ch.close();
                    return new DirLock(null, null);
                }
                while (true) {
                    try {
                        return new DirLock(ch, ch.lock());
                    } catch (OverlappingFileLockException sameJvm) {
                        // Another thread of this JVM holds it under another key (only possible without file keys).
                        Thread.sleep(5);
                    }
                }
            } catch (IOException | UnsupportedOperationException e) {
                ch.close();
                return new DirLock(null, null);
            } catch (InterruptedException e) {
                ch.close();
                Thread.currentThread().interrupt();
                throw new IOException("interrupted while waiting for another save into " + dir, e);
            }
        }

        @Override
        public void close() throws IOException {
            if (channel != null) {
                channel.close(); // releases the lock too
            }
        }
    }

    /**
     * A new empty file {@code .<name>.<token><suffix>} with the mode the umask gives (as {@code open(2)} with 0666
     * does; {@code Files.createTempFile} would give 0600); another token if that name is taken.
     */
    private static Path createFresh(Path dir, String name, String token, String suffix) throws IOException {
        for (int attempt = 0; ; attempt++) {
            String t = attempt == 0 ? token : Long.toHexString(ThreadLocalRandom.current().nextLong() | Long.MIN_VALUE);
            Path path = dir.resolve("." + name + "." + t + suffix);
            try {
                FileChannel.open(path, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE).close();
                return path;
            } catch (FileAlreadyExistsException e) {
                if (attempt == 10) {
                    throw e;
                }
            }
        }
    }

    /** An existing target keeps its permissions: copy them to the file that replaces it. */
    private static void keepMode(Path target, Path replacement) throws IOException {
        if (!Files.exists(target)) {
            return;
        }
        PosixFileAttributeView from = Files.getFileAttributeView(target, PosixFileAttributeView.class);
        PosixFileAttributeView to = Files.getFileAttributeView(replacement, PosixFileAttributeView.class);
        if (from != null && to != null) {
            to.setPermissions(from.readAttributes().permissions());
        }
    }

    /**
     * Removes temporary files and backups of earlier, killed saves of the files {@code names}: this version's
     * ({@code .<name>.<token>.lora4j-tmp}, {@code -old}), 0.2 snapshots' fixed names ({@code .<name>.lora4j-tmp})
     * and older {@code Files.createTempFile} names ({@code .<name>.<digits>.tmp}).
     */
    private static void cleanStaleTemporaries(Path dir, List<String> names) throws IOException {
        List<Pattern> stale = new ArrayList<>();
        for (String name : names) {
            String n = Pattern.quote(name);
            stale.add(Pattern.compile("\\." + n + "(\\.[0-9a-f]+)?(" + Pattern.quote(TMP_SUFFIX) + "|"
                    + Pattern.quote(BACKUP_SUFFIX) + ")"));
            stale.add(Pattern.compile("\\." + n + "\\.\\d+\\.tmp"));
        }
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir, ".*")) {
            for (Path p : s) {
                String file = p.getFileName().toString();
                for (Pattern pattern : stale) {
                    if (pattern.matcher(file).matches()) {
                        Files.deleteIfExists(p);
                        break;
                    }
                }
            }
        }
    }

    /** fsync the directory so the renames survive a power loss; not possible on every platform (e.g. Windows). */
    private static void syncDirectory(Path dir) {
        try (FileChannel ch = FileChannel.open(dir, StandardOpenOption.READ)) {
            ch.force(true);
        } catch (IOException | UnsupportedOperationException e) {
            // The files themselves were forced; a directory that cannot be opened cannot be synced either.
        }
    }

    // ---------------------------------------------------------------- reading

    /**
     * Refuses anything but a regular file of at most {@code maxSize} bytes, without opening it (opening a FIFO for
     * reading blocks).
     *
     * @param file    the file; a symbolic link is followed, and refused if it leads to anything else
     * @param maxSize the largest size accepted, in bytes
     * @throws AdapterFormatException         if {@code file} is a directory, FIFO, socket or device, or larger
     * @throws java.nio.file.NoSuchFileException if it does not exist
     * @throws IOException                    if its attributes cannot be read
     */
    public static void requireRegularFile(Path file, long maxSize) throws IOException {
        BasicFileAttributes own = Files.readAttributes(file, BasicFileAttributes.class, LinkOption.NOFOLLOW_LINKS);
        BasicFileAttributes target = own.isSymbolicLink() ? Files.readAttributes(file, BasicFileAttributes.class) : own;
        if (!target.isRegularFile()) {
            String kind = target.isDirectory() ? "a directory" : "a special file (FIFO, socket or device)";
            throw new AdapterFormatException(file.getFileName() + ": expected a regular file, got " + kind
                    + (own.isSymbolicLink() ? " behind the symbolic link " + file : ""));
        }
        if (target.size() > maxSize) {
            throw new AdapterFormatException(file.getFileName() + ": expected at most " + maxSize + " bytes, got "
                    + target.size());
        }
    }

    /**
     * The whole of a regular file of at most {@code max} bytes ({@link #requireRegularFile} first), refusing it once
     * more than {@code max} bytes were read (the file may grow meanwhile).
     *
     * @param file the file
     * @param max  the largest size accepted, in bytes (at most {@code Integer.MAX_VALUE - 16})
     * @return the file's bytes
     * @throws AdapterFormatException         if the file is not a regular file or holds more than {@code max} bytes
     * @throws java.nio.file.NoSuchFileException if it does not exist
     * @throws IOException                    if reading fails
     */
    public static byte[] readBounded(Path file, long max) throws IOException {
        requireRegularFile(file, max);
        try (SeekableByteChannel ch = Files.newByteChannel(file, StandardOpenOption.READ)) {
            ByteBuffer buf = ByteBuffer.allocate((int) Math.min(max + 1, Math.max(ch.size() + 1, 1)));
            while (true) {
                int n = ch.read(buf);
                if (n < 0) {
                    break;
                }
                if (!buf.hasRemaining()) {
                    if (buf.capacity() > max) {
                        throw new AdapterFormatException(file.getFileName() + ": expected at most " + max
                                + " bytes, the file holds more");
                    }
                    buf = ByteBuffer.allocate((int) Math.min(max + 1, 2L * buf.capacity())).put(buf.flip());
                }
            }
            return Arrays.copyOf(buf.array(), buf.position());
        }
    }

    /**
     * One tensor as a safetensors header declares it.
     *
     * @param dtype the safetensors type name ({@code F32}, {@code F64}, {@code F16} or {@code BF16})
     * @param shape the declared shape; copied
     */
    public record TensorInfo(String dtype, long[] shape) {
        /**
         * Copies the shape.
         *
         * @param dtype the safetensors type name
         * @param shape the declared shape; copied
         */
        public TensorInfo {
            shape = shape.clone();
        }

        /**
         * The declared shape.
         *
         * @return a fresh copy
         */
        @Override
        public long[] shape() {
            return shape.clone();
        }

        /**
         * Value equality over the shape's elements.
         *
         * @param o the object to compare with
         * @return whether {@code o} declares the same type and shape
         */
        @Override
        public boolean equals(Object o) {
            return o instanceof TensorInfo t && dtype.equals(t.dtype) && Arrays.equals(shape, t.shape);
        }

        /**
         * A hash over the type and the shape's elements.
         *
         * @return the hash code
         */
        @Override
        public int hashCode() {
            return 31 * dtype.hashCode() + Arrays.hashCode(shape);
        }

        @Override
        public String toString() {
            return dtype + Arrays.toString(shape);
        }
    }

    /** A check of a safetensors header, run before any tensor is decoded. */
    @FunctionalInterface
    public interface HeaderCheck {
        /**
         * Checks the declared tensors; throwing stops the read before any tensor is decoded.
         *
         * @param metadata the {@code __metadata__} strings, in file order (unmodifiable)
         * @param tensors  every tensor by name, sorted (unmodifiable)
         * @throws IOException for a file that does not fit what the caller expects (e.g. {@link AdapterFormatException})
         */
        void check(Map<String, String> metadata, Map<String, TensorInfo> tensors) throws IOException;
    }

    /**
     * Reads a safetensors file of {@code F32}, {@code F64}, {@code F16} or {@code BF16} tensors: a regular file
     * ({@link #requireRegularFile}); its header (at most 32 MiB, streamed, at most 100,000 tensors and 10,000 metadata
     * entries, every entry's size against its offsets, the offsets tiling the data exactly) checked, then
     * {@code check} called, then every tensor decoded. The largest allocation before {@code check} is the header;
     * after it, the declared tensors.
     *
     * @param file  the file
     * @param check called once with the metadata and the declared tensors; may throw to refuse the file
     * @return every tensor by name (sorted), c-order: {@code F64} as DOUBLE, the others widened exactly to FLOAT
     * @throws AdapterFormatException         if the file is not a regular file, breaks the format, or {@code check}
     *                                        refuses it
     * @throws java.nio.file.NoSuchFileException if it does not exist
     * @throws IOException                    if reading fails
     */
    public static Map<String, INDArray> readSafetensors(Path file, HeaderCheck check) throws IOException {
        Objects.requireNonNull(check, "check must not be null");
        requireRegularFile(file, Long.MAX_VALUE);
        String what = file.getFileName().toString();
        try (SeekableByteChannel ch = Files.newByteChannel(file, StandardOpenOption.READ)) {
            Safetensors.Header header = Safetensors.readHeader(ch, what);
            Map<String, TensorInfo> declared = new TreeMap<>();
            header.entries.forEach((name, e) -> declared.put(name, new TensorInfo(e.dtype.name(), e.shape)));
            check.check(header.metadata, Collections.unmodifiableMap(declared));
            Map<String, INDArray> out = new TreeMap<>();
            for (Safetensors.Entry e : header.entries.values()) {
                out.put(e.name, Safetensors.decode(ch, header, e, what));
            }
            return out;
        }
    }
}
