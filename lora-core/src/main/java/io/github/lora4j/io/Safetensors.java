package io.github.lora4j.io;

import com.fasterxml.jackson.core.JacksonException;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.StreamReadConstraints;
import com.fasterxml.jackson.core.StreamReadFeature;
import com.fasterxml.jackson.core.exc.StreamConstraintsException;
import com.fasterxml.jackson.databind.DeserializationFeature;
import com.fasterxml.jackson.databind.json.JsonMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.CharBuffer;
import java.nio.channels.SeekableByteChannel;
import java.nio.channels.WritableByteChannel;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.TreeMap;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/**
 * Reader and writer of the safetensors format (https://github.com/huggingface/safetensors), restricted to the
 * floating types LoRA adapters use: {@code F32}, {@code F64}, {@code F16}, {@code BF16}.
 *
 * <p>Layout: an unsigned 64-bit little-endian header length {@code N}; {@code N} bytes of UTF-8 JSON
 * {@code {"__metadata__": {str: str}, "<name>": {"dtype": .., "shape": [..], "data_offsets": [begin, end]}}},
 * possibly padded with spaces; then the byte buffer, where each tensor occupies {@code [begin, end)}
 * (relative to the buffer), row-major, little-endian. The offsets must tile the buffer exactly: no overlap,
 * no hole, nothing after the last tensor.
 *
 * <p>Reading trusts nothing: the header length is checked against the real file size and a cap before anything
 * is allocated, and every tensor's declared size against its offsets and the whole buffer before any tensor is
 * read; so the largest allocation is bounded by the file's real size. Every violation is an
 * {@link AdapterFormatException} naming expected vs actual.
 */
final class Safetensors {

    /**
     * Most tensors a file may hold: about 2.7 times the 36,864 LoRA tensors of an adapter on every expert projection
     * of a 48-layer, 128-expert MoE model, the largest kind of adapter published; a file with more is refused before
     * anything is decoded (940,000 tiny tensors would take minutes and gigabytes of ND4J arrays).
     */
    static final int MAX_TENSORS = 100_000;

    /**
     * Largest header accepted: 32 MiB, room for {@link #MAX_TENSORS} entries with long names (the reference
     * implementation allows 100 MB, which no adapter needs).
     */
    static final long MAX_HEADER_BYTES = 32L << 20;

    /** Longest string (tensor name, metadata key or value) a header may hold, in characters: 8 Mi. */
    static final int MAX_STRING_CHARS = 8 << 20;

    /** Key of the free-form string map in the header. */
    static final String METADATA_KEY = "__metadata__";

    private static final JsonMapper JSON = JsonMapper.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .enable(DeserializationFeature.FAIL_ON_TRAILING_TOKENS)
            .build();

    /**
     * Most {@code __metadata__} entries a header may hold: far above what any published file holds (PEFT writes one,
     * lora4j five, kohya's trainers about 60); more are refused as they are read.
     */
    static final int MAX_METADATA_ENTRIES = 10_000;

    /** Most dimensions a tensor's shape may have (LoRA's are 2- to 5-D). */
    static final int MAX_DIMS = 32;

    /**
     * For streaming the header: duplicate keys refused, and the parser's own limits tight enough that no token costs
     * more than its bytes: numbers of at most 100 digits (a 64-bit offset has 19), strings of at most
     * {@value #MAX_STRING_CHARS} characters, nesting at most 4 deep (the format needs 3).
     */
    private static final JsonFactory STREAM = JsonFactory.builder()
            .enable(StreamReadFeature.STRICT_DUPLICATE_DETECTION)
            .streamReadConstraints(StreamReadConstraints.builder()
                    .maxNumberLength(100)
                    .maxStringLength(MAX_STRING_CHARS)
                    .maxNestingDepth(4)
                    .build())
            .build();

    private Safetensors() {
    }

    /**
     * The element types lora4j reads and writes, with their safetensors names and sizes. F16 is ND4J's {@code HALF},
     * deprecated there but the type ND4J's own half-precision arrays have (and lora4j's API documents).
     */
    @SuppressWarnings("deprecation")
    enum Dtype {
        F16(2, DataType.FLOAT16), BF16(2, DataType.BFLOAT16), F32(4, DataType.FLOAT), F64(8, DataType.DOUBLE);

        final int bytes;
        final DataType nd4j;

        Dtype(int bytes, DataType nd4j) {
            this.bytes = bytes;
            this.nd4j = nd4j;
        }

        /** The dtype that stores ND4J type {@code type} in a file. */
        static Dtype of(DataType type) {
            for (Dtype d : values()) {
                if (d.nd4j == type) {
                    return d;
                }
            }
            throw new IllegalArgumentException("file data type must be one of FLOAT (F32), DOUBLE (F64), HALF (F16) "
                    + "or BFLOAT16 (BF16), got " + type);
        }

        /** ND4J type a tensor of this dtype is read into: DOUBLE for F64, FLOAT otherwise (exact widening). */
        DataType memoryType() {
            return this == F64 ? DataType.DOUBLE : DataType.FLOAT;
        }
    }

    /** One tensor as read: the file's dtype and shape, values widened to {@link Dtype#memoryType()}, c-order. */
    static final class Tensor {
        final Dtype dtype;
        final long[] shape;
        final INDArray data;

        Tensor(Dtype dtype, long[] shape, INDArray data) {
            this.dtype = dtype;
            this.shape = shape;
            this.data = data;
        }
    }

    /** A whole file: metadata and tensors by name (sorted). */
    static final class Contents {
        final Map<String, String> metadata;
        final Map<String, Tensor> tensors;

        Contents(Map<String, String> metadata, Map<String, Tensor> tensors) {
            this.metadata = Collections.unmodifiableMap(metadata);
            this.tensors = Collections.unmodifiableMap(tensors);
        }
    }

    /** One tensor's header entry: name, dtype, shape and byte range {@code [begin, end)} within the data. */
    static final class Entry {
        final String name;
        final Dtype dtype;
        final long[] shape;
        final long begin;
        final long end;

        Entry(String name, Dtype dtype, long[] shape, long begin, long end) {
            this.name = name;
            this.dtype = dtype;
            this.shape = shape;
            this.begin = begin;
            this.end = end;
        }
    }

    // ---------------------------------------------------------------- reading

    /**
     * The parsed header of a file: metadata, every tensor's name, dtype, shape and byte range, and where the data
     * starts. Nothing of the data has been read; {@link #decode} reads one tensor.
     */
    static final class Header {
        final Map<String, String> metadata;
        /** Entries by name (sorted). */
        final Map<String, Entry> entries;
        final long dataStart;

        Header(Map<String, String> metadata, Map<String, Entry> entries, long dataStart) {
            this.metadata = Collections.unmodifiableMap(metadata);
            this.entries = Collections.unmodifiableMap(entries);
            this.dataStart = dataStart;
        }
    }

    /** Reads a whole safetensors file. */
    static Contents read(Path file) throws IOException {
        try (SeekableByteChannel ch = Files.newByteChannel(file, StandardOpenOption.READ)) {
            return read(ch, file.getFileName().toString());
        }
    }

    /**
     * Reads a safetensors file from {@code ch}, starting at position 0; {@code what} names it in messages.
     *
     * @throws AdapterFormatException for anything that breaks the format or a type outside F32/F64/F16/BF16
     */
    static Contents read(SeekableByteChannel ch, String what) throws IOException {
        Header header = readHeader(ch, what);
        Map<String, Tensor> tensors = new TreeMap<>();
        for (Entry e : header.entries.values()) {
            tensors.put(e.name, new Tensor(e.dtype, e.shape, decode(ch, header, e, what)));
        }
        return new Contents(header.metadata, tensors);
    }

    /**
     * Reads and checks the header only: the length field against the file size and {@link #MAX_HEADER_BYTES}, the
     * JSON (streamed, stopping at the {@value #MAX_TENSORS}th tensor), every entry's size against its offsets, and
     * that the offsets tile the data exactly. The largest allocation is the header itself.
     */
    static Header readHeader(SeekableByteChannel ch, String what) throws IOException {
        long size = ch.size();
        if (size < 8) {
            throw new AdapterFormatException(what + ": expected at least 8 bytes (the header length), got a file of "
                    + size + " bytes");
        }
        ByteBuffer lengthField = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
        readFully(ch, lengthField, 0, what);
        long headerLength = lengthField.getLong(0);
        // Compare as unsigned: a "negative" length is a length beyond 2^63, and beyond any file.
        if (Long.compareUnsigned(headerLength, size - 8) > 0) {
            throw new AdapterFormatException(what + ": header length " + Long.toUnsignedString(headerLength)
                    + " exceeds the " + (size - 8) + " bytes that follow the length field");
        }
        if (headerLength > MAX_HEADER_BYTES) {
            throw new AdapterFormatException(what + ": header length " + headerLength + " exceeds the limit of "
                    + MAX_HEADER_BYTES + " bytes (enough for " + MAX_TENSORS + " tensors)");
        }
        byte[] headerBytes = new byte[(int) headerLength];
        readFully(ch, ByteBuffer.wrap(headerBytes), 8, what);
        checkUtf8(headerBytes, what);
        long dataStart = 8 + headerLength;
        long dataLength = size - dataStart;

        Map<String, String> metadata = new LinkedHashMap<>();
        List<Entry> entries = parseHeader(headerBytes, metadata, what);
        checkCoverage(entries, dataLength, what);
        Map<String, Entry> byName = new TreeMap<>();
        for (Entry e : entries) {
            byName.put(e.name, e);
        }
        return new Header(metadata, byName, dataStart);
    }

    /** Reads and decodes one tensor of {@code header}; values widened to {@link Dtype#memoryType()}, c-order. */
    static INDArray decode(SeekableByteChannel ch, Header header, Entry e, String what) throws IOException {
        long bytes = e.end - e.begin;
        if (bytes > Integer.MAX_VALUE - 16) {
            throw new AdapterFormatException(what + ": tensor '" + e.name + "' has " + bytes
                    + " bytes; this reader supports at most " + (Integer.MAX_VALUE - 16) + " bytes per tensor");
        }
        ByteBuffer buf = ByteBuffer.allocate((int) bytes).order(ByteOrder.LITTLE_ENDIAN);
        readFully(ch, buf, header.dataStart + e.begin, what);
        buf.flip();
        return decode(buf, e.dtype, e.shape);
    }

    private static void readFully(SeekableByteChannel ch, ByteBuffer buf, long position, String what)
            throws IOException {
        ch.position(position);
        while (buf.hasRemaining()) {
            if (ch.read(buf) < 0) {
                throw new AdapterFormatException(what + ": file ended at byte " + (position + buf.position())
                        + ", expected " + buf.remaining() + " more bytes");
            }
        }
    }

    static String decodeUtf8(ByteBuffer bytes, String what) throws AdapterFormatException {
        try {
            CharBuffer chars = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(bytes);
            return chars.toString();
        } catch (CharacterCodingException e) {
            throw new AdapterFormatException(what + ": not valid UTF-8 (" + e + ")", e);
        }
    }

    /** Checks that {@code bytes} are valid UTF-8, decoding through a small buffer so no copy of the size is made. */
    private static void checkUtf8(byte[] bytes, String what) throws AdapterFormatException {
        java.nio.charset.CharsetDecoder decoder = StandardCharsets.UTF_8.newDecoder()
                .onMalformedInput(CodingErrorAction.REPORT)
                .onUnmappableCharacter(CodingErrorAction.REPORT);
        ByteBuffer in = ByteBuffer.wrap(bytes);
        CharBuffer out = CharBuffer.allocate(4096);
        while (true) {
            java.nio.charset.CoderResult r = decoder.decode(in, out, true);
            if (r.isError()) {
                throw new AdapterFormatException(what + ": not valid UTF-8 (malformed input at byte "
                        + (8 + in.position()) + ")");
            }
            out.clear();
            if (r.isUnderflow()) {
                break;
            }
        }
        java.nio.charset.CoderResult r = decoder.flush(out);
        if (r.isError()) {
            throw new AdapterFormatException(what + ": not valid UTF-8 (truncated sequence at the end)");
        }
    }

    /**
     * Streams the header JSON token by token and builds no JSON tree: metadata strings go straight into
     * {@code metadata}, entries straight into {@link Entry}s, and anything else is refused at its first token (a
     * non-string metadata value, a field of a tensor entry other than dtype, shape and data_offsets, the
     * {@value #MAX_TENSORS}th tensor, the {@value #MAX_METADATA_ENTRIES}th metadata entry, a shape of more than
     * {@value #MAX_DIMS} dimensions). So memory stays proportional to what is kept, whatever the header holds.
     */
    private static List<Entry> parseHeader(byte[] header, Map<String, String> metadata, String what)
            throws AdapterFormatException {
        List<Entry> entries = new ArrayList<>();
        try (JsonParser p = STREAM.createParser(header)) {
            JsonToken first = p.nextToken();
            if (first != JsonToken.START_OBJECT) {
                throw new AdapterFormatException(what + ": expected the header to be a JSON object, got "
                        + (first == null ? "nothing" : kind(first)));
            }
            JsonToken t;
            while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
                String name = p.currentName();
                JsonToken value = p.nextToken();
                if (value == null) {
                    throw new AdapterFormatException(what + ": header ended after key '" + name + "'");
                }
                if (name.equals(METADATA_KEY)) {
                    parseMetadata(p, value, metadata, what);
                } else {
                    if (entries.size() == MAX_TENSORS) {
                        throw new AdapterFormatException(what + ": more than " + MAX_TENSORS + " tensors; expected at "
                                + "most " + MAX_TENSORS + " (a LoRA adapter holds two per adapted module: 36,864 for "
                                + "every expert projection of a 48-layer, 128-expert MoE model)");
                    }
                    entries.add(parseEntry(name, p, value, what));
                }
            }
            if (t != JsonToken.END_OBJECT || p.nextToken() != null) {
                throw new AdapterFormatException(what + ": header is not valid JSON: expected one object, got "
                        + (t == null ? "an unterminated object" : "trailing content"));
            }
        } catch (StreamConstraintsException e) {
            throw new AdapterFormatException(what + ": header exceeds a limit of this reader: "
                    + e.getOriginalMessage(), e);
        } catch (JacksonException e) {
            throw new AdapterFormatException(what + ": header is not valid JSON (duplicate keys included): "
                    + e.getOriginalMessage(), e);
        } catch (AdapterFormatException e) {
            throw e;
        } catch (IOException e) {
            throw new AdapterFormatException(what + ": header is not valid JSON: " + e.getMessage(), e);
        }
        return entries;
    }

    /** The JSON kind of a value's first token, as messages name it (Jackson's node type names). */
    private static String kind(JsonToken t) {
        switch (t) {
            case START_OBJECT:
                return "OBJECT";
            case START_ARRAY:
                return "ARRAY";
            case VALUE_STRING:
                return "STRING";
            case VALUE_NUMBER_INT:
            case VALUE_NUMBER_FLOAT:
                return "NUMBER";
            case VALUE_TRUE:
            case VALUE_FALSE:
                return "BOOLEAN";
            case VALUE_NULL:
                return "NULL";
            default:
                return t.name();
        }
    }

    /** {@code __metadata__}: an object of strings, read into {@code metadata} (file order) as it streams. */
    private static void parseMetadata(JsonParser p, JsonToken first, Map<String, String> metadata, String what)
            throws IOException {
        if (first != JsonToken.START_OBJECT) {
            throw new AdapterFormatException(what + ": expected " + METADATA_KEY + " to be an object of strings, got "
                    + kind(first));
        }
        JsonToken t;
        while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
            String key = p.currentName();
            JsonToken v = p.nextToken();
            if (v != JsonToken.VALUE_STRING) {
                throw new AdapterFormatException(what + ": expected " + METADATA_KEY + "['" + brief(key)
                        + "'] to be a string, got " + (v == null ? "nothing" : kind(v)));
            }
            if (metadata.size() == MAX_METADATA_ENTRIES) {
                throw new AdapterFormatException(what + ": " + METADATA_KEY + " holds more than "
                        + MAX_METADATA_ENTRIES + " entries; expected at most " + MAX_METADATA_ENTRIES
                        + " (published adapters hold a few, kohya's trainers about 60)");
            }
            metadata.put(key, p.getText());
        }
        if (t != JsonToken.END_OBJECT) {
            throw new AdapterFormatException(what + ": " + METADATA_KEY + " is not a complete JSON object");
        }
    }

    /** One tensor entry, from its opening token to its closing one; any other field is refused as it comes. */
    private static Entry parseEntry(String name, JsonParser p, JsonToken first, String what) throws IOException {
        String where = what + ": tensor '" + brief(name) + "'";
        if (first != JsonToken.START_OBJECT) {
            throw new AdapterFormatException(where + ": expected an object with dtype, shape and data_offsets, got "
                    + kind(first));
        }
        String dtypeName = null;
        long[] shape = null;
        long[] offsets = null;
        JsonToken t;
        while ((t = p.nextToken()) == JsonToken.FIELD_NAME) {
            String field = p.currentName();
            JsonToken v = p.nextToken();
            switch (field) {
                case "dtype":
                    if (v != JsonToken.VALUE_STRING) {
                        throw new AdapterFormatException(where + ": expected a string dtype, got " + kind(v));
                    }
                    dtypeName = p.getText();
                    break;
                case "shape":
                    shape = longs(p, v, "shape", MAX_DIMS, false, where);
                    break;
                case "data_offsets":
                    offsets = longs(p, v, "data_offsets", 2, true, where);
                    break;
                default:
                    throw new AdapterFormatException(where + ": unknown field '" + brief(field) + "'; expected only "
                            + "dtype, shape and data_offsets");
            }
        }
        if (t != JsonToken.END_OBJECT) {
            throw new AdapterFormatException(where + ": not a complete JSON object");
        }
        if (dtypeName == null) {
            throw new AdapterFormatException(where + ": expected a string dtype, got none");
        }
        Dtype dtype;
        try {
            dtype = Dtype.valueOf(dtypeName);
        } catch (IllegalArgumentException e) {
            throw new AdapterFormatException(where + ": unsupported dtype '" + brief(dtypeName) + "', expected one of "
                    + Arrays.toString(Dtype.values()));
        }
        if (shape == null) {
            throw new AdapterFormatException(where + ": expected shape to be an array of integers, got none");
        }
        if (offsets == null) {
            throw new AdapterFormatException(where + ": expected data_offsets to be an array of integers, got none");
        }
        long begin = offsets[0];
        long end = offsets[1];
        if (begin > end) {
            throw new AdapterFormatException(where + ": data_offsets must satisfy begin <= end, got [" + begin + ", "
                    + end + "]");
        }
        long bytes = dtype.bytes;
        try {
            for (long d : shape) {
                bytes = Math.multiplyExact(bytes, d);
            }
        } catch (ArithmeticException e) {
            throw new AdapterFormatException(where + ": shape " + Arrays.toString(shape)
                    + " has more elements than a 64-bit size can hold");
        }
        if (bytes != end - begin) {
            throw new AdapterFormatException(where + ": shape " + Arrays.toString(shape) + " of " + dtype + " needs "
                    + bytes + " bytes, but data_offsets [" + begin + ", " + end + "] hold " + (end - begin));
        }
        return new Entry(name, dtype, shape, begin, end);
    }

    /**
     * Non-negative 64-bit integers of a JSON array, streamed: at most {@code length} of them, exactly that many when
     * {@code exact}.
     */
    private static long[] longs(JsonParser p, JsonToken first, String field, int length, boolean exact, String where)
            throws IOException {
        if (first != JsonToken.START_ARRAY) {
            throw new AdapterFormatException(where + ": expected " + field + " to be an array of integers, got "
                    + kind(first));
        }
        long[] values = new long[length];
        int n = 0;
        JsonToken t;
        while ((t = p.nextToken()) != JsonToken.END_ARRAY) {
            if (n == length) {
                throw new AdapterFormatException(where + ": expected " + field + " to have " + (exact ? "" : "at most ")
                        + length + " entries, got " + (length + 1) + " or more");
            }
            if (t != JsonToken.VALUE_NUMBER_INT || p.getNumberType() == JsonParser.NumberType.BIG_INTEGER
                    || p.getLongValue() < 0) {
                throw new AdapterFormatException(where + ": expected " + field + "[" + n
                        + "] to be a non-negative 64-bit integer, got " + (t == null ? "nothing" : brief(p.getText())));
            }
            values[n++] = p.getLongValue();
        }
        if (exact && n != length) {
            throw new AdapterFormatException(where + ": expected " + field + " to have " + length + " entries, got "
                    + n);
        }
        return Arrays.copyOf(values, n);
    }

    /** {@code s} cut to 100 characters for a message (names and values in a hostile file can be megabytes). */
    static String brief(String s) {
        return s.length() <= 100 ? s : s.substring(0, 100) + "... (" + s.length() + " characters)";
    }

    /** The offsets, sorted, must tile {@code [0, dataLength)} exactly. */
    private static void checkCoverage(List<Entry> entries, long dataLength, String what) throws AdapterFormatException {
        List<Entry> sorted = new ArrayList<>(entries);
        sorted.sort(Comparator.comparingLong((Entry e) -> e.begin).thenComparingLong(e -> e.end));
        long expected = 0;
        for (Entry e : sorted) {
            if (e.begin != expected) {
                String problem = e.begin < expected ? "overlaps the previous tensor" : "leaves a hole before it";
                throw new AdapterFormatException(what + ": tensor '" + e.name + "' " + problem
                        + ": expected data_offsets to begin at " + expected + ", got [" + e.begin + ", " + e.end + "]");
            }
            expected = e.end;
        }
        if (expected != dataLength) {
            throw new AdapterFormatException(what + ": tensors cover " + expected + " bytes of data, but the file holds "
                    + dataLength + " bytes after the header");
        }
    }

    private static INDArray decode(ByteBuffer buf, Dtype dtype, long[] shape) {
        int n = buf.remaining() / dtype.bytes;
        INDArray flat;
        switch (dtype) {
            case F64: {
                double[] v = new double[n];
                buf.asDoubleBuffer().get(v);
                flat = Nd4j.createFromArray(v);
                break;
            }
            case F32: {
                float[] v = new float[n];
                buf.asFloatBuffer().get(v);
                flat = Nd4j.createFromArray(v);
                break;
            }
            default: {
                float[] v = new float[n];
                for (int i = 0; i < n; i++) {
                    int bits = buf.getShort(2 * i) & 0xFFFF;
                    v[i] = dtype == Dtype.F16 ? FloatFormats.halfToFloat(bits) : FloatFormats.bfloat16ToFloat(bits);
                }
                flat = Nd4j.createFromArray(v);
            }
        }
        return n == 0 ? Nd4j.create(dtype.memoryType(), shape) : flat.reshape('c', shape);
    }

    // ---------------------------------------------------------------- writing

    /**
     * Writes {@code tensors} (FLOAT or DOUBLE arrays, any order/view) to {@code ch} as {@code dtype} (null: each in
     * its own type, F32 for FLOAT and F64 for DOUBLE), in the map's iteration order, with the header padded by spaces
     * so the data starts at a multiple of 8 bytes. All values are converted and checked before the first byte is
     * written.
     *
     * @throws IllegalArgumentException if a finite value overflows {@code dtype} (e.g. 70000 in F16), naming it
     */
    static void write(WritableByteChannel ch, Map<String, INDArray> tensors, Map<String, String> metadata,
                      Dtype dtype) throws IOException {
        ObjectNode header = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode meta = header.putObject(METADATA_KEY);
            metadata.forEach(meta::put);
        }
        List<ByteBuffer> data = new ArrayList<>();
        long offset = 0;
        for (Map.Entry<String, INDArray> t : tensors.entrySet()) {
            if (t.getKey().equals(METADATA_KEY)) {
                throw new IllegalArgumentException("tensor name " + METADATA_KEY + " is reserved by the format");
            }
            INDArray array = Objects.requireNonNull(t.getValue(), t.getKey());
            Dtype type = dtype != null ? dtype : array.dataType() == DataType.DOUBLE ? Dtype.F64 : Dtype.F32;
            ByteBuffer bytes = encode(t.getKey(), array, type);
            ObjectNode entry = header.putObject(t.getKey());
            entry.put("dtype", type.name());
            ArrayNode shape = entry.putArray("shape");
            for (long d : t.getValue().shape()) {
                shape.add(d);
            }
            entry.putArray("data_offsets").add(offset).add(offset + bytes.remaining());
            offset += bytes.remaining();
            data.add(bytes);
        }
        byte[] json = JSON.writeValueAsBytes(header);
        int padded = (json.length + 7) / 8 * 8;
        ByteBuffer head = ByteBuffer.allocate(8 + padded).order(ByteOrder.LITTLE_ENDIAN);
        head.putLong(padded).put(json);
        while (head.hasRemaining()) {
            head.put((byte) ' ');
        }
        head.flip();
        writeFully(ch, head);
        for (ByteBuffer b : data) {
            writeFully(ch, b);
        }
    }

    private static void writeFully(WritableByteChannel ch, ByteBuffer b) throws IOException {
        while (b.hasRemaining()) {
            ch.write(b);
        }
    }

    private static ByteBuffer encode(String name, INDArray array, Dtype dtype) {
        if (array.dataType() != DataType.FLOAT && array.dataType() != DataType.DOUBLE) {
            throw new IllegalArgumentException("tensor '" + name + "': expected FLOAT or DOUBLE, got "
                    + array.dataType());
        }
        long length = array.length();
        if (length * dtype.bytes > Integer.MAX_VALUE - 16) {
            throw new IllegalArgumentException("tensor '" + name + "' has " + length
                    + " elements; this writer supports at most " + (Integer.MAX_VALUE - 16) / dtype.bytes + " of "
                    + dtype);
        }
        // dup('c') gives a fresh contiguous row-major buffer whatever the source's order or view offset.
        double[] v = array.dup('c').data().asDouble();
        ByteBuffer out = ByteBuffer.allocate(v.length * dtype.bytes).order(ByteOrder.LITTLE_ENDIAN);
        for (double x : v) {
            switch (dtype) {
                case F64:
                    out.putDouble(x);
                    break;
                case F32:
                    float f = (float) x; // Java's narrowing rounds to nearest even
                    checkNoOverflow(name, x, f, dtype);
                    out.putFloat(f);
                    break;
                case F16: {
                    short h = FloatFormats.toHalf(x);
                    checkNoOverflow(name, x, FloatFormats.halfToFloat(h), dtype);
                    out.putShort(h);
                    break;
                }
                default: {
                    short h = FloatFormats.toBfloat16(x);
                    checkNoOverflow(name, x, FloatFormats.bfloat16ToFloat(h), dtype);
                    out.putShort(h);
                }
            }
        }
        out.flip();
        return out;
    }

    private static void checkNoOverflow(String name, double value, float stored, Dtype dtype) {
        if (Double.isFinite(value) && Float.isInfinite(stored)) {
            throw new IllegalArgumentException("tensor '" + name + "': value " + value + " overflows " + dtype
                    + "; expected a magnitude below its largest finite value");
        }
    }
}
