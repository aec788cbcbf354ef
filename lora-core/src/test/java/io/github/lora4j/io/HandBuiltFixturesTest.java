package io.github.lora4j.io;

import static io.github.lora4j.io.IoTestData.concat;
import static io.github.lora4j.io.IoTestData.f32;
import static io.github.lora4j.io.IoTestData.file;
import static io.github.lora4j.io.IoTestData.u16;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Files whose bytes are written out by hand from the safetensors spec, not by lora4j's writer.
 *
 * <p>How they are built ({@link IoTestData#file}): the header is an explicit JSON string in the test; its UTF-8
 * length goes first as an 8-byte little-endian integer, then the header bytes, then the tensor bytes, each value
 * little-endian, row-major, with {@code data_offsets} counted by hand from the start of the data. F16 and BF16
 * values are given as raw 16-bit patterns taken from the format definitions (e.g. 1.0 is {@code 0x3C00} in F16,
 * {@code 0x3F80} in BF16), so the test does not depend on lora4j's conversions.
 */
class HandBuiltFixturesTest {

    @TempDir
    Path tmp;

    private static final String TWO_BY_ONE_ADAPTER = "{\"__metadata__\":{\"format\":\"pt\"},"
            + "\"base_model.model.m.lora_A.weight\":{\"dtype\":\"%1$s\",\"shape\":[1,4],\"data_offsets\":[0,8]},"
            + "\"base_model.model.m.lora_B.weight\":{\"dtype\":\"%1$s\",\"shape\":[2,1],\"data_offsets\":[8,12]}}";

    private PeftAdapter readAdapter(String dtype, byte[] data) throws IOException {
        byte[] bytes = file(String.format(TWO_BY_ONE_ADAPTER, dtype), data);
        return PeftAdapterFiles.read(IoTestData.writeDir(tmp.resolve(dtype), IoTestData.configJson(1), bytes));
    }

    private static void assertFloats(float[] expected, INDArray actual) {
        assertEquals(DataType.FLOAT, actual.dataType());
        float[] got = actual.dup('c').data().asFloat();
        for (int i = 0; i < expected.length; i++) {
            assertEquals(Float.floatToRawIntBits(expected[i]), Float.floatToRawIntBits(got[i]),
                    "element " + i + ": expected " + expected[i] + ", got " + got[i]);
        }
    }

    @Test
    void readsBf16KnownValues() throws IOException {
        // 1.0 = 0x3F80, -2.5 = 0xC020, smallest subnormal 2^-133 = 0x0001, largest finite = 0x7F7F;
        // 0.5 = 0x3F00, -0.0 = 0x8000.
        PeftAdapter a = readAdapter("BF16", u16(0x3F80, 0xC020, 0x0001, 0x7F7F, 0x3F00, 0x8000));
        assertEquals(List.of("m"), a.modules());
        assertArrayEquals(new long[] {1, 4}, a.a("m").shape());
        assertArrayEquals(new long[] {2, 1}, a.b("m").shape());
        assertFloats(new float[] {1.0f, -2.5f, (float) Math.pow(2, -133), 3.3895314e38f}, a.a("m"));
        assertFloats(new float[] {0.5f, -0.0f}, a.b("m"));
    }

    @Test
    void readsF16KnownValues() throws IOException {
        // 1.0 = 0x3C00, -2.5 = 0xC100, smallest subnormal 2^-24 = 0x0001, largest finite 65504 = 0x7BFF;
        // 0.5 = 0x3800, -0.0 = 0x8000.
        PeftAdapter a = readAdapter("F16", u16(0x3C00, 0xC100, 0x0001, 0x7BFF, 0x3800, 0x8000));
        assertFloats(new float[] {1.0f, -2.5f, 5.9604645e-8f, 65504f}, a.a("m"));
        assertFloats(new float[] {0.5f, -0.0f}, a.b("m"));
    }

    @Test
    void readsF32AndF64() throws IOException {
        // F32: A is 4 values = 16 bytes at [0, 16), B 2 values = 8 bytes at [16, 24).
        String f32Header = "{\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F32\",\"shape\":[1,4],\"data_offsets\":[0,16]},"
                + "\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F32\",\"shape\":[2,1],\"data_offsets\":[16,24]}}";
        PeftAdapter f = PeftAdapterFiles.read(IoTestData.writeDir(tmp.resolve("f32"), IoTestData.configJson(1),
                file(f32Header, f32(1f, -2.5f, Float.MIN_VALUE, 3e38f, 0.5f, -0f))));
        assertFloats(new float[] {1f, -2.5f, Float.MIN_VALUE, 3e38f}, f.a("m"));
        assertFloats(new float[] {0.5f, -0f}, f.b("m"));
        // F64: A is 32 bytes, B 16; offsets counted by hand.
        String header = "{\"base_model.model.m.lora_B.weight\":{\"dtype\":\"F64\",\"shape\":[2,1],\"data_offsets\":[32,48]},"
                + "\"base_model.model.m.lora_A.weight\":{\"dtype\":\"F64\",\"shape\":[1,4],\"data_offsets\":[0,32]}}";
        ByteBuffer d = ByteBuffer.allocate(48).order(ByteOrder.LITTLE_ENDIAN);
        for (double x : new double[] {0.1, -1e300, Double.MIN_VALUE, 7, 0.25, -3}) {
            d.putDouble(x);
        }
        PeftAdapter a = PeftAdapterFiles.read(IoTestData.writeDir(tmp.resolve("f64"), IoTestData.configJson(1),
                file(header, d.array())));
        assertEquals(DataType.DOUBLE, a.a("m").dataType());
        assertArrayEquals(new double[] {0.1, -1e300, Double.MIN_VALUE, 7}, a.a("m").dup('c').data().asDouble());
        assertArrayEquals(new double[] {0.25, -3}, a.b("m").dup('c').data().asDouble());
    }

    @Test
    void acceptsSpacePaddingHeaderOrderUnlikeDataOrderAndEmptyTensors() throws IOException {
        // Header padded with spaces (allowed by the spec), entries listed in a different order from the data,
        // a mix of dtypes, and a zero-element tensor whose offsets are [8, 8].
        String header = "{\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[8,8]},"
                + "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]},"
                + "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}     ";
        byte[] bytes = file(header, concat(f32(3f, 4f), u16(0x3F80, 0x4000)));
        Safetensors.Contents c = Safetensors.read(new ByteArrayChannel(bytes), "hand-built");
        assertEquals(List.of("a", "b", "z"), List.copyOf(c.tensors.keySet()));
        assertFloats(new float[] {3f, 4f}, c.tensors.get("a").data);
        assertFloats(new float[] {1f, 2f}, c.tensors.get("b").data);
        assertEquals(Safetensors.Dtype.BF16, c.tensors.get("b").dtype);
        assertArrayEquals(new long[] {0, 3}, c.tensors.get("z").data.shape());
        assertEquals(Map.of(), c.metadata);
    }

    @Test
    void writerProducesTheSpecLayoutByteForByte() throws IOException {
        Map<String, INDArray> tensors = new LinkedHashMap<>();
        tensors.put("w", Nd4j.createFromArray(new float[] {1f, -2.5f}).reshape(1, 2));
        tensors.put("v", Nd4j.createFromArray(new double[] {0.5}));
        Path f = tmp.resolve("w.safetensors");
        try (var ch = Files.newByteChannel(f, java.nio.file.StandardOpenOption.CREATE_NEW,
                java.nio.file.StandardOpenOption.WRITE)) {
            Safetensors.write(ch, tensors, Map.of("format", "pt"), Safetensors.Dtype.BF16);
        }
        String json = "{\"__metadata__\":{\"format\":\"pt\"},"
                + "\"w\":{\"dtype\":\"BF16\",\"shape\":[1,2],\"data_offsets\":[0,4]},"
                + "\"v\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[4,6]}}";
        String padded = json + " ".repeat((8 - json.length() % 8) % 8); // data must start 8-byte aligned
        byte[] expected = file(padded, u16(0x3F80, 0xC020, 0x3F00));
        byte[] actual = Files.readAllBytes(f);
        assertEquals(new String(expected, 8, padded.length(), StandardCharsets.UTF_8),
                new String(actual, 8, Math.min(padded.length(), actual.length - 8), StandardCharsets.UTF_8));
        assertArrayEquals(expected, actual);
        assertEquals(0, (8 + padded.length()) % 8);
    }
}
