package io.github.lora4j.io;

import io.github.lora4j.io.PeftAdapterFiles.FileOps;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.SeekableByteChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.nio.file.attribute.PosixFileAttributeView;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.locks.ReentrantLock;
import java.util.regex.Pattern;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The file-system side of {@link PeftAdapterFiles}: writing an adapter's two files so that readers see the old pair
 * or the new one (temporary files, renames, a backup of the model file, fsync), and reading only regular files of
 * bounded size (a FIFO or device is refused before it is opened). The guarantees are stated in
 * {@link PeftAdapterFiles}'s class comment.
 */
final class SafeFiles {

    static final String TMP_SUFFIX = ".lora4j-tmp";
    static final String BACKUP_SUFFIX = ".lora4j-old";
    /** Temporary files of lora4j before 0.2 ({@code Files.createTempFile}), cleaned up by the next save. */
    private static final Pattern LEGACY_TMP = Pattern.compile("\\.adapter_(model\\.safetensors|config\\.json)\\.\\d+\\.tmp");

    private static final Map<Path, ReentrantLock> DIR_LOCKS = new ConcurrentHashMap<>();

    private static final String MODEL_FILE = PeftAdapterFiles.MODEL_FILE;
    private static final String CONFIG_FILE = PeftAdapterFiles.CONFIG_FILE;

    private SafeFiles() {
    }

    /** Writes both files of one save atomically, in the order model, config (see the class comment). */
    static void writeFiles(Path dir, byte[] configJson, Map<String, INDArray> tensors,
                           Map<String, String> metadata, Safetensors.Dtype dtype, FileOps ops)
            throws IOException {
        Files.createDirectories(dir);
        ReentrantLock lock = DIR_LOCKS.computeIfAbsent(dir.toAbsolutePath().normalize(), d -> new ReentrantLock());
        lock.lock();
        try {
            Path modelTarget = dir.resolve(MODEL_FILE);
            Path configTarget = dir.resolve(CONFIG_FILE);
            for (Path target : List.of(modelTarget, configTarget)) {
                if (Files.exists(target) && !Files.isRegularFile(target)) {
                    throw new IOException("cannot replace " + target + ": expected a regular file or nothing, found "
                            + "a directory or special file");
                }
            }
            cleanStaleTemporaries(dir);
            Path modelTmp = dir.resolve("." + MODEL_FILE + TMP_SUFFIX);
            Path configTmp = dir.resolve("." + CONFIG_FILE + TMP_SUFFIX);
            Path backup = dir.resolve("." + MODEL_FILE + BACKUP_SUFFIX);
            try {
                try (FileChannel ch = createFresh(modelTmp)) {
                    Safetensors.write(ch, tensors, metadata, dtype);
                    ch.force(true);
                }
                try (FileChannel ch = createFresh(configTmp)) {
                    ByteBuffer b = ByteBuffer.wrap(configJson);
                    while (b.hasRemaining()) {
                        ch.write(b);
                    }
                    ch.force(true);
                }
                keepMode(modelTarget, modelTmp);
                keepMode(configTarget, configTmp);
                boolean hadModel = Files.exists(modelTarget, LinkOption.NOFOLLOW_LINKS);
                if (hadModel) {
                    try {
                        Files.createLink(backup, modelTarget);
                    } catch (UnsupportedOperationException | IOException noHardLinks) {
                        Files.copy(modelTarget, backup, StandardCopyOption.COPY_ATTRIBUTES,
                                StandardCopyOption.REPLACE_EXISTING);
                    }
                }
                // ATOMIC_MOVE is a rename(2) on POSIX: readers see the old file or the new one, never a mix.
                ops.move(modelTmp, modelTarget);
                try {
                    ops.move(configTmp, configTarget);
                } catch (IOException | RuntimeException e) {
                    try {
                        if (hadModel) {
                            ops.move(backup, modelTarget);
                        } else {
                            Files.delete(modelTarget);
                        }
                    } catch (IOException | RuntimeException restore) {
                        e.addSuppressed(restore);
                        throw new IOException("replacing " + configTarget + " failed and the old " + MODEL_FILE
                                + " could not be put back: " + dir + " now holds the new weights beside the old "
                                + "config; save again", e);
                    }
                    throw e;
                }
                syncDirectory(dir);
            } finally {
                Files.deleteIfExists(modelTmp);
                Files.deleteIfExists(configTmp);
                Files.deleteIfExists(backup);
            }
        } finally {
            lock.unlock();
        }
    }

    /**
     * A new empty file at {@code path} with the mode the umask gives (as {@code open(2)} with 0666 does), replacing
     * what a killed save left there. {@code Files.createTempFile} would give 0600.
     */
    private static FileChannel createFresh(Path path) throws IOException {
        Files.deleteIfExists(path);
        try {
            return FileChannel.open(path, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE);
        } catch (FileAlreadyExistsException e) {
            throw new IOException("another save is writing " + path + "; expected one save per directory at a time", e);
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

    /** Removes temporary files of earlier, killed saves (this version's fixed names and older random ones). */
    private static void cleanStaleTemporaries(Path dir) throws IOException {
        try (DirectoryStream<Path> s = Files.newDirectoryStream(dir, ".adapter_*")) {
            for (Path p : s) {
                String name = p.getFileName().toString();
                if (name.endsWith(TMP_SUFFIX) || name.endsWith(BACKUP_SUFFIX) || LEGACY_TMP.matcher(name).matches()) {
                    Files.deleteIfExists(p);
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

    /** Refuses anything but a regular file, without opening it (opening a FIFO for reading blocks). */
    static void requireRegularFile(Path file, long maxSize) throws IOException {
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

    /** The whole file, refusing it once more than {@code max} bytes were read (the file may grow meanwhile). */
    static byte[] readBounded(Path file, long max) throws IOException {
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
}
