package io.github.lora4j.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.fail;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.WeightLayout;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.Channels;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SplittableRandom;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import net.jqwik.api.ForAll;
import net.jqwik.api.Property;
import net.jqwik.api.statistics.Statistics;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Mutated adapter files (bit flips, truncation, rewritten header lengths, edited offsets, shapes and dtypes,
 * inserted or deleted bytes, mangled configs) are either read correctly or refused with
 * {@link AdapterFormatException}: never another exception, never an unbounded allocation.
 */
class AdapterFileFuzzTest {

    private static final Pattern NUMBER = Pattern.compile("\\d+");
    private static final String[] DTYPES = {"F16", "BF16", "F32", "F64", "I64", "U8", "F8_E4M3", "f32", ""};

    /** Valid files to mutate: in-memory safetensors bytes with their config, several dtypes and shapes. */
    private static final List<byte[][]> SEEDS = seeds();

    private static List<byte[][]> seeds() {
        List<byte[][]> seeds = new ArrayList<>();
        Safetensors.Dtype[] dtypes = Safetensors.Dtype.values();
        for (int i = 0; i < 8; i++) {
            int r = 1 + i % 3;
            Map<String, INDArray> tensors = new TreeMap<>();
            for (int m = 0; m <= i % 3; m++) {
                LoraLinear layer = IoTestData.layer(DataType.FLOAT, i * 10 + m, 3 + m, 4 + i % 2,
                        LoraConfig.builder().rank(r).build(), WeightLayout.OUT_IN);
                String module = "model.layers." + m + ".mlp.up_proj";
                tensors.put(PeftAdapterFiles.PREFIX + module + PeftAdapterFiles.A_SUFFIX, layer.loraA("default"));
                tensors.put(PeftAdapterFiles.PREFIX + module + PeftAdapterFiles.B_SUFFIX, layer.loraB("default"));
            }
            // Half the seeds also hold the other roles: embedding LoRA, conv LoRA, a modules_to_save head, a base
            // copy, and a rank_pattern giving the embedding its own rank.
            String pattern = "";
            if (i % 2 == 1) {
                int re = r + 1;
                tensors.put(PeftAdapterFiles.PREFIX + "model.embed_tokens.lora_embedding_A",
                        io.github.lora4j.TestData.gaussian(DataType.FLOAT, i, 1, re, 5));
                tensors.put(PeftAdapterFiles.PREFIX + "model.embed_tokens.lora_embedding_B",
                        io.github.lora4j.TestData.gaussian(DataType.FLOAT, i + 1, 1, 3, re));
                tensors.put(PeftAdapterFiles.PREFIX + "conv.lora_A.weight",
                        io.github.lora4j.TestData.gaussian(DataType.FLOAT, i + 2, 1, r, 2, 3, 3));
                tensors.put(PeftAdapterFiles.PREFIX + "conv.lora_B.weight",
                        io.github.lora4j.TestData.gaussian(DataType.FLOAT, i + 3, 1, 4, r, 1, 1));
                tensors.put(PeftAdapterFiles.PREFIX + "score.weight", io.github.lora4j.TestData.gaussian(DataType.FLOAT, i + 4, 1, 2, 3));
                tensors.put(PeftAdapterFiles.PREFIX + "score.bias", io.github.lora4j.TestData.gaussian(DataType.FLOAT, i + 5, 1, 2));
                tensors.put(PeftAdapterFiles.PREFIX + "head.original_module.weight",
                        io.github.lora4j.TestData.gaussian(DataType.FLOAT, i + 6, 1, 2, 2));
                pattern = ", \"rank_pattern\": {\"embed_tokens\": " + re + "}, \"modules_to_save\": [\"score\"]";
            }
            ByteArrayOutputStream out = new ByteArrayOutputStream();
            try {
                Safetensors.write(Channels.newChannel(out), tensors, Map.of("format", "pt"), dtypes[i % dtypes.length]);
            } catch (IOException e) {
                throw new IllegalStateException(e);
            }
            byte[] config = ("{\"peft_type\": \"LORA\", \"r\": " + r + ", \"lora_alpha\": 16, \"lora_dropout\": 0.1,"
                    + " \"target_modules\": [\"up_proj\"], \"use_rslora\": false, \"fan_in_fan_out\": false,"
                    + " \"bias\": \"none\", \"use_dora\": false, \"future_key\": {\"a\": [1, 2]}" + pattern + "}")
                    .getBytes(StandardCharsets.UTF_8);
            seeds.add(new byte[][] {out.toByteArray(), config});
        }
        return seeds;
    }

    @Property(tries = 10_000)
    void mutatedFilesAreReadCorrectlyOrRefusedWithAdapterFormatExceptionOnly(@ForAll long seed) {
        SplittableRandom rng = new SplittableRandom(seed);
        byte[][] base = SEEDS.get(rng.nextInt(SEEDS.size()));
        byte[] model = base[0].clone();
        byte[] config = base[1].clone();
        int mutations = 1 + rng.nextInt(3);
        List<String> applied = new ArrayList<>();
        for (int i = 0; i < mutations; i++) {
            int kind = rng.nextInt(10);
            applied.add(String.valueOf(kind));
            switch (kind) {
                case 0: model = flipBits(model, rng, 0, model.length); break;
                case 1: model = flipBits(model, rng, 0, Math.min(model.length, 8 + headerLength(model))); break;
                case 2: model = java.util.Arrays.copyOf(model, rng.nextInt(model.length + 1)); break;
                case 3: model = rewriteHeaderLength(model, rng); break;
                case 4: model = editNumber(model, rng); break;
                case 5: model = swapDtype(model, rng); break;
                case 6: model = insertOrDelete(model, rng); break;
                case 7: config = rng.nextBoolean() ? flipBits(config, rng, 0, config.length)
                        : java.util.Arrays.copyOf(config, rng.nextInt(config.length + 1)); break;
                case 9: config = editConfig(config, rng); break;
                default: model = editNumber(model, rng); model = editNumber(model, rng); break;
            }
        }
        PeftAdapter adapter = null;
        try {
            adapter = PeftAdapterFiles.read(config, new ByteArrayChannel(model));
        } catch (AdapterFormatException expected) {
            // the documented refusal
        } catch (IOException | RuntimeException | OutOfMemoryError | StackOverflowError e) {
            // Anything else read() lets escape breaks its contract: report which mutations caused it.
            fail("mutations " + applied + " made read throw " + e + " instead of AdapterFormatException", e);
            return;
        }
        if (adapter != null) {
            // Accepted: the result must still satisfy every invariant read() promises.
            for (String module : adapter.modules()) {
                int r = adapter.config().rankOf(module);
                assertEquals(r, adapter.rank(module));
                assertEquals(r, adapter.a(module).size(0));
                assertEquals(r, adapter.b(module).size(1));
                assertEquals(adapter.kind(module) == PeftAdapterLayout.Kind.CONV ? 4 : 2, adapter.a(module).rank());
                assertEquals(adapter.a(module).rank(), adapter.b(module).rank());
            }
        }
        String outcome = adapter != null ? "accepted" : "refused";
        Statistics.collect(outcome);
        Statistics.coverage(c -> {
            c.check("accepted").count(n -> n > 0);
            c.check("refused").count(n -> n > 0);
        });
    }

    /** Sets a config key PEFT defines to a value of another type or meaning. */
    private static byte[] editConfig(byte[] config, SplittableRandom rng) {
        String[] keys = {"use_dora", "lora_bias", "alora_invocation_tokens", "layer_replication", "init_lora_weights",
            "rank_pattern", "alpha_pattern", "modules_to_save", "r", "lora_alpha", "target_modules", "base_model_name_or_path"};
        String[] values = {"true", "\"true\"", "1", "0", "null", "[]", "{}", "\"pissa\"", "{\"up_proj\": 2}",
            "{\"(\": 1}", "[\"score\"]", "1e39", "-1", "\"gaussian\"", "[[0, 1]]"};
        String json = new String(config, StandardCharsets.UTF_8);
        int end = json.lastIndexOf('}');
        if (end < 0) {
            return config;
        }
        String key = keys[rng.nextInt(keys.length)];
        String edited = json.replaceFirst("\"" + key + "\": [^,}]*(,|})", "")
                .replaceFirst("\\{", "{\"" + key + "\": " + values[rng.nextInt(values.length)] + ", ");
        return edited.getBytes(StandardCharsets.UTF_8);
    }

    private static long headerLength(byte[] f) {
        return f.length < 8 ? 0 : Math.max(0, Math.min(f.length, ByteBuffer.wrap(f).order(ByteOrder.LITTLE_ENDIAN).getLong()));
    }

    private static byte[] flipBits(byte[] f, SplittableRandom rng, int from, long to) {
        if (to <= from) {
            return f;
        }
        int flips = 1 + rng.nextInt(4);
        for (int i = 0; i < flips; i++) {
            int pos = from + rng.nextInt((int) (to - from));
            f[pos] ^= (byte) (1 << rng.nextInt(8));
        }
        return f;
    }

    private static byte[] rewriteHeaderLength(byte[] f, SplittableRandom rng) {
        if (f.length < 8) {
            return f;
        }
        long n = ByteBuffer.wrap(f).order(ByteOrder.LITTLE_ENDIAN).getLong();
        long[] choices = {n + rng.nextInt(-16, 17), rng.nextLong(f.length + 64L), rng.nextLong(), Long.MIN_VALUE,
                -1L, (long) Integer.MAX_VALUE + rng.nextInt(3), Safetensors.MAX_HEADER_BYTES + 1, 0};
        ByteBuffer.wrap(f).order(ByteOrder.LITTLE_ENDIAN).putLong(0, choices[rng.nextInt(choices.length)]);
        return f;
    }

    /** Replaces one integer in the header (a shape dim or an offset) with a nearby, random or extreme value. */
    private static byte[] editNumber(byte[] f, SplittableRandom rng) {
        int h = (int) Math.min(f.length - 8L, headerLength(f));
        if (h <= 0) {
            return f;
        }
        String header = new String(f, 8, h, StandardCharsets.ISO_8859_1); // one char per byte: offsets stay aligned
        List<int[]> spans = new ArrayList<>();
        Matcher m = NUMBER.matcher(header);
        while (m.find()) {
            spans.add(new int[] {m.start(), m.end()});
        }
        if (spans.isEmpty()) {
            return f;
        }
        int[] s = spans.get(rng.nextInt(spans.size()));
        long old = Long.parseLong(header.substring(s[0], Math.min(s[1], s[0] + 18)));
        String[] choices = {String.valueOf(old + rng.nextInt(-8, 9)), String.valueOf(rng.nextLong(1L << 62)),
                "-" + old, "18446744073709551615", "4611686018427387904", String.valueOf(old * 2), "0", "1e3"};
        String edited = header.substring(0, s[0]) + choices[rng.nextInt(choices.length)] + header.substring(s[1]);
        return withHeader(f, h, edited, rng.nextBoolean());
    }

    private static byte[] swapDtype(byte[] f, SplittableRandom rng) {
        int h = (int) Math.min(f.length - 8L, headerLength(f));
        if (h <= 0) {
            return f;
        }
        String header = new String(f, 8, h, StandardCharsets.ISO_8859_1);
        String edited = header.replaceFirst("\"(F16|BF16|F32|F64)\"", "\"" + DTYPES[rng.nextInt(DTYPES.length)] + "\"");
        return withHeader(f, h, edited, rng.nextBoolean());
    }

    /** Rebuilds the file with a new header; keeps the old (now possibly wrong) length field unless asked. */
    private static byte[] withHeader(byte[] f, int oldLength, String header, boolean fixLength) {
        byte[] hb = header.getBytes(StandardCharsets.ISO_8859_1);
        byte[] out = new byte[f.length - oldLength + hb.length];
        System.arraycopy(f, 0, out, 0, 8);
        System.arraycopy(hb, 0, out, 8, hb.length);
        System.arraycopy(f, 8 + oldLength, out, 8 + hb.length, f.length - 8 - oldLength);
        if (fixLength) {
            ByteBuffer.wrap(out).order(ByteOrder.LITTLE_ENDIAN).putLong(0, hb.length);
        }
        return out;
    }

    private static byte[] insertOrDelete(byte[] f, SplittableRandom rng) {
        int pos = rng.nextInt(f.length + 1);
        int n = 1 + rng.nextInt(8);
        if (rng.nextBoolean()) {
            byte[] out = new byte[f.length + n];
            System.arraycopy(f, 0, out, 0, pos);
            for (int i = 0; i < n; i++) {
                out[pos + i] = (byte) rng.nextInt(256);
            }
            System.arraycopy(f, pos, out, pos + n, f.length - pos);
            return out;
        }
        int del = Math.min(n, f.length - pos);
        byte[] out = new byte[f.length - del];
        System.arraycopy(f, 0, out, 0, pos);
        System.arraycopy(f, pos + del, out, pos, f.length - pos - del);
        return out;
    }

    @Property(tries = 50)
    void unmutatedSeedsAreReadBackExactly(@ForAll long seed) throws IOException {
        // The fuzz baseline: every seed file is valid, so "accepted" above really means a well-formed read.
        byte[][] base = SEEDS.get(new SplittableRandom(seed).nextInt(SEEDS.size()));
        PeftAdapter a = PeftAdapterFiles.read(base[1], new ByteArrayChannel(base[0]));
        assertArrayEquals(new Object[] {"format"}, a.metadata().keySet().toArray());
    }
}
