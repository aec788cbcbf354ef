package io.github.lora4j.io;

import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.DirectoryStream;
import java.nio.file.Files;
import java.nio.file.LinkOption;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import java.util.stream.Stream;

/**
 * PEFT's layout for several adapters in one folder ({@code save_pretrained} with every adapter): the adapter named
 * {@value #DEFAULT} at the top, each other adapter in a subfolder named after it. See
 * {@link PeftAdapterFiles#adapterFolders} and {@link PeftAdapterFiles.Saver#saveAll}.
 */
final class AdapterFolders {

    /** The adapter PEFT writes at the top of the folder. */
    static final String DEFAULT = "default";

    /** Most directory entries {@link #list} looks at: a folder of adapters has a handful. */
    static final int MAX_ENTRIES = 4096;

    private AdapterFolders() {
    }

    /**
     * Refuses an adapter name that cannot be a subfolder of its own: blank, {@code "."}/{@code ".."} or starting with
     * a dot (lora4j's temporary and backup names do), holding a path separator, a colon or a control character, or
     * named like a file of the folder.
     */
    static void checkName(String name) {
        Objects.requireNonNull(name, "adapter name must not be null");
        boolean control = name.chars().anyMatch(c -> c < 0x20 || c == 0x7f);
        if (name.isBlank() || name.startsWith(".") || name.contains("/") || name.contains("\\") || name.contains(":")
                || control || name.equals(PeftAdapterFiles.CONFIG_FILE) || name.equals(PeftAdapterFiles.MODEL_FILE)) {
            throw new IllegalArgumentException("adapter name '" + name.replaceAll("\\p{Cntrl}", "?") + "': expected a "
                    + "name that can be a subfolder (not blank, no leading '.', no '/', '\\\\', ':' or control "
                    + "characters, not " + PeftAdapterFiles.CONFIG_FILE + " or " + PeftAdapterFiles.MODEL_FILE + ")");
        }
    }

    /** The folder of adapter {@code name} under {@code dir}: {@code dir} itself for {@value #DEFAULT}. */
    static Path folder(Path dir, String name) {
        return name.equals(DEFAULT) ? dir : dir.resolve(name);
    }

    /** See {@link PeftAdapterFiles#adapterFolders}. */
    static Map<String, Path> list(Path dir) throws IOException {
        Objects.requireNonNull(dir, "dir must not be null");
        if (!Files.isDirectory(dir)) {
            throw new NoSuchFileException(dir.toString(), null, "expected a directory of PEFT adapters");
        }
        Map<String, Path> out = new LinkedHashMap<>();
        if (Files.exists(dir.resolve(PeftAdapterFiles.CONFIG_FILE), LinkOption.NOFOLLOW_LINKS)) {
            out.put(DEFAULT, dir);
        }
        TreeMap<String, Path> subfolders = new TreeMap<>();
        int entries = 0;
        try (DirectoryStream<Path> ds = Files.newDirectoryStream(dir)) {
            for (Path p : ds) {
                if (++entries > MAX_ENTRIES) {
                    throw new AdapterFormatException(dir + ": expected at most " + MAX_ENTRIES + " entries in a folder "
                            + "of adapters, found more; nothing was read");
                }
                String name = p.getFileName().toString();
                if (name.startsWith(".") || !Files.isDirectory(p, LinkOption.NOFOLLOW_LINKS)
                        || !Files.exists(p.resolve(PeftAdapterFiles.CONFIG_FILE), LinkOption.NOFOLLOW_LINKS)) {
                    continue;   // hidden entries, files, symbolic links and folders without an adapter
                }
                if (name.equals(DEFAULT)) {
                    throw new AdapterFormatException(p + ": PEFT writes adapter '" + DEFAULT + "' at the top of the "
                            + "folder, not in a subfolder; expected '" + DEFAULT + "' only at the top");
                }
                try {
                    checkName(name);
                } catch (IllegalArgumentException e) {
                    throw new AdapterFormatException(p + ": " + e.getMessage(), e);
                }
                subfolders.put(name, p);
            }
        }
        out.putAll(subfolders);
        return out;
    }

    /** See {@link PeftAdapterFiles.Saver#saveAll}. */
    static void saveAll(PeftAdapterFiles.Saver saver, Path dir, List<String> names) throws IOException {
        Objects.requireNonNull(dir, "dir must not be null");
        Objects.requireNonNull(names, "adapterNames must not be null");
        if (names.isEmpty()) {
            throw new IllegalArgumentException("adapterNames: expected at least one adapter to save, got none");
        }
        if (new HashSet<>(names).size() != names.size()) {
            throw new IllegalArgumentException("adapterNames: expected each adapter once, got " + names);
        }
        names.forEach(AdapterFolders::checkName);
        boolean created = !Files.exists(dir, LinkOption.NOFOLLOW_LINKS);
        Files.createDirectories(dir);
        Path staging = Files.createTempDirectory(dir, ".lora4j-staging-");
        boolean done = false;
        try {
            // 1. Every adapter checked and written into the staging folder: the target does not change yet.
            for (String name : names) {
                saver.save(folder(staging, name), name);
            }
            // 2. Folder by folder into place; a failure puts back the folders replaced before it.
            Path old = staging.resolve(".old");
            List<String> committed = new ArrayList<>();
            try {
                for (String name : names) {
                    Path target = folder(dir, name);
                    boolean existed = Files.isDirectory(target, LinkOption.NOFOLLOW_LINKS);
                    backUp(target, folder(old, name));
                    committed.add(name);
                    if (!existed) {
                        Files.createFile(folder(old, name).resolve(".absent"));
                    }
                    SafeFiles.write(target, pair(folder(staging, name)));
                }
            } catch (IOException | RuntimeException e) {
                for (int i = committed.size() - 1; i >= 0; i--) {
                    try {
                        restore(folder(dir, committed.get(i)), folder(old, committed.get(i)));
                    } catch (IOException | RuntimeException again) {
                        e.addSuppressed(again);
                    }
                }
                throw e;
            }
            done = true;
        } finally {
            deleteRecursively(staging);
            if (!done && created) {
                deleteRecursively(dir);
            }
        }
    }

    /** The model file then the config, from the files in {@code from}, as {@link SafeFiles#write} takes them. */
    private static Map<String, SafeFiles.Content> pair(Path from) {
        Map<String, SafeFiles.Content> files = new LinkedHashMap<>();
        for (String name : List.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE)) {
            Path source = from.resolve(name);
            files.put(name, ch -> {
                try (FileChannel in = FileChannel.open(source, StandardOpenOption.READ)) {
                    long size = in.size();
                    for (long at = 0; at < size; ) {
                        at += in.transferTo(at, size - at, ch);
                    }
                }
            });
        }
        return files;
    }

    /** Hard links (or copies) of the adapter files {@code target} holds now, in {@code backup}. */
    private static void backUp(Path target, Path backup) throws IOException {
        Files.createDirectories(backup);
        for (String name : List.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE)) {
            Path f = target.resolve(name);
            if (Files.isRegularFile(f, LinkOption.NOFOLLOW_LINKS)) {
                try {
                    Files.createLink(backup.resolve(name), f);
                } catch (UnsupportedOperationException | IOException noLinks) {
                    Files.copy(f, backup.resolve(name));
                }
            }
        }
    }

    /** Puts {@code target} back as {@link #backUp} saw it: the old files, or no folder if there was none. */
    private static void restore(Path target, Path backup) throws IOException {
        if (Files.exists(backup.resolve(".absent"))) {
            deleteRecursively(target);
            return;
        }
        boolean hadModel = Files.exists(backup.resolve(PeftAdapterFiles.MODEL_FILE));
        boolean hadConfig = Files.exists(backup.resolve(PeftAdapterFiles.CONFIG_FILE));
        if (hadModel && hadConfig) {
            SafeFiles.write(target, pair(backup));
            return;
        }
        for (String name : List.of(PeftAdapterFiles.MODEL_FILE, PeftAdapterFiles.CONFIG_FILE)) {
            if (Files.exists(backup.resolve(name))) {
                Files.copy(backup.resolve(name), target.resolve(name), java.nio.file.StandardCopyOption.REPLACE_EXISTING);
            } else {
                Files.deleteIfExists(target.resolve(name));
            }
        }
    }

    private static void deleteRecursively(Path p) throws IOException {
        if (!Files.exists(p, LinkOption.NOFOLLOW_LINKS)) {
            return;
        }
        try (Stream<Path> walk = Files.walk(p)) {
            for (Path q : walk.sorted(Comparator.reverseOrder()).toList()) {
                Files.deleteIfExists(q);
            }
        }
    }
}
