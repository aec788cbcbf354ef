package io.github.lora4j.io;

import static io.github.lora4j.TestData.gaussian;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/** Layers, arrays and raw safetensors bytes for the file tests. */
final class IoTestData {

    static final String Q = "model.layers.0.self_attn.q_proj";
    static final String V = "model.layers.0.self_attn.v_proj";

    /** A minimal valid adapter_config.json for rank {@code r}. */
    static String configJson(int r) {
        return "{\"peft_type\": \"LORA\", \"r\": " + r + ", \"lora_alpha\": 16, \"target_modules\": [\"q_proj\"]}";
    }

    private IoTestData() {
    }

    /** A layer in {@code layout} whose default adapter holds random A and B. */
    static LoraLinear layer(DataType type, long seed, int in, int out, LoraConfig config, WeightLayout layout) {
        INDArray w = layout == WeightLayout.OUT_IN ? gaussian(type, seed, 0.5, out, in) : gaussian(type, seed, 0.5, in, out);
        LoraLinear layer = LoraLinear.wrap(w, null, config, layout);
        layer.setAdapterWeights(LoraLinear.DEFAULT_ADAPTER, gaussian(type, seed + 2, 0.5, config.rank(), in),
                gaussian(type, seed + 3, 0.5, out, config.rank()));
        return layer;
    }

    /** Two modules, q [8 -> 12] and v [8 -> 6], with rank-4 random default adapters. */
    static Map<String, LoraLinear> model(DataType type, long seed) {
        LoraConfig cfg = LoraConfig.builder().rank(4).alpha(8).build();
        Map<String, LoraLinear> m = new LinkedHashMap<>();
        m.put(Q, layer(type, seed, 8, 12, cfg, WeightLayout.OUT_IN));
        m.put(V, layer(type, seed + 10, 8, 6, cfg, WeightLayout.OUT_IN));
        return m;
    }

    /** Two bare layers with no adapter, shaped like {@link #model}. */
    static Map<String, LoraLinear> bareModel(DataType type) {
        Map<String, LoraLinear> m = new LinkedHashMap<>();
        m.put(Q, LoraLinear.base(gaussian(type, 1, 0.5, 12, 8), null, WeightLayout.OUT_IN));
        m.put(V, LoraLinear.base(gaussian(type, 2, 0.5, 6, 8), null, WeightLayout.OUT_IN));
        return m;
    }

    /**
     * A safetensors file assembled by hand: the 8-byte little-endian length of {@code header}'s UTF-8 bytes,
     * those bytes, then {@code data} as is. Nothing is padded or checked, so tests can build broken files too.
     */
    static byte[] file(String header, byte[] data) {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        return ByteBuffer.allocate(8 + h.length + data.length).order(ByteOrder.LITTLE_ENDIAN)
                .putLong(h.length).put(h).put(data).array();
    }

    /**
     * Writes a safetensors file whose header is exactly {@code headerBytes} long, streamed to disk (a 32 MiB header
     * never exists as one string here, so the test itself fits a small heap): {@code prefix}, then {@code unit(0)},
     * {@code unit(1)}, ... while they fit before {@code suffix}, then {@code suffix}, padded with spaces after it;
     * then {@code data}. The units must be ASCII.
     */
    static void writeBigHeader(Path file, long headerBytes, String prefix, java.util.function.IntFunction<String> unit,
                               String suffix, byte[] data) throws IOException {
        Files.createDirectories(file.getParent());
        try (java.io.OutputStream out = new java.io.BufferedOutputStream(Files.newOutputStream(file), 1 << 16)) {
            out.write(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(headerBytes).array());
            byte[] p = prefix.getBytes(StandardCharsets.UTF_8);
            byte[] s = suffix.getBytes(StandardCharsets.UTF_8);
            long left = headerBytes - p.length - s.length;
            out.write(p);
            for (int i = 0; ; i++) {
                byte[] u = unit.apply(i).getBytes(StandardCharsets.US_ASCII);
                if (u.length > left) {
                    break;
                }
                out.write(u);
                left -= u.length;
            }
            out.write(s);
            for (long i = 0; i < left; i++) {
                out.write(' ');
            }
            out.write(data);
        }
    }

    /** Little-endian float32 bytes. */
    static byte[] f32(float... v) {
        ByteBuffer b = ByteBuffer.allocate(4 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (float x : v) {
            b.putFloat(x);
        }
        return b.array();
    }

    /** Little-endian 16-bit words (raw F16 or BF16 bits). */
    static byte[] u16(int... v) {
        ByteBuffer b = ByteBuffer.allocate(2 * v.length).order(ByteOrder.LITTLE_ENDIAN);
        for (int x : v) {
            b.putShort((short) x);
        }
        return b.array();
    }

    /** Concatenation. */
    static byte[] concat(byte[]... parts) {
        int n = Arrays.stream(parts).mapToInt(p -> p.length).sum();
        ByteBuffer b = ByteBuffer.allocate(n);
        for (byte[] p : parts) {
            b.put(p);
        }
        return b.array();
    }

    /** Writes an adapter directory from raw bytes. */
    static Path writeDir(Path dir, String config, byte[] model) throws IOException {
        Files.createDirectories(dir);
        Files.writeString(dir.resolve(PeftAdapterFiles.CONFIG_FILE), config);
        Files.write(dir.resolve(PeftAdapterFiles.MODEL_FILE), model);
        return dir;
    }

    /** Every file of {@code dir} by name, with its bytes. */
    static Map<String, byte[]> files(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            Map<String, byte[]> m = new TreeMap<>();
            for (Path p : s.collect(Collectors.toList())) {
                m.put(p.getFileName().toString(), Files.readAllBytes(p));
            }
            return m;
        }
    }

    /** Fails unless {@code dir} holds exactly the files of {@code before}, byte for byte. */
    static void assertSameFiles(Map<String, byte[]> before, Path dir) throws IOException {
        Map<String, byte[]> after = files(dir);
        assertEquals(before.keySet(), after.keySet(), "no file added, removed or left behind");
        before.forEach((f, b) -> assertArrayEquals(b, after.get(f), f + " must be unchanged"));
    }

    /** Deletes a directory tree (for properties, which have no {@code @TempDir}). */
    static void deleteTree(Path dir) throws IOException {
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toArray(Path[]::new)) {
                Files.delete(p);
            }
        }
    }

    /** The keys of {@code module}'s A and B in a file, by kind. */
    static String[] loraKeys(PeftAdapter a, String module) {
        boolean emb = a.kind(module) == PeftAdapterLayout.Kind.EMBEDDING;
        return new String[] {PeftAdapterFiles.PREFIX + module + (emb ? ".lora_embedding_A" : PeftAdapterFiles.A_SUFFIX),
            PeftAdapterFiles.PREFIX + module + (emb ? ".lora_embedding_B" : PeftAdapterFiles.B_SUFFIX)};
    }
}
