package io.github.lora4j.serve;

import static io.github.lora4j.TestData.gaussian;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraLinear;
import io.github.lora4j.io.PeftAdapterFiles;
import io.github.lora4j.model.LoraModel;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Comparator;
import java.util.List;
import java.util.stream.Stream;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * A two-module FLOAT base ({@code l0 [hidden, in]}, {@code l1 [out, hidden]}), PEFT adapter directories for it
 * (good, with a NaN, with a garbage header, of the wrong shapes) and the two-layer forward every test runs.
 */
final class StoreFixture {

    static final String L0 = "layers.0.proj";
    static final String L1 = "layers.1.proj";

    final int in;
    final int hidden;
    final int out;

    StoreFixture(int in, int hidden, int out) {
        this.in = in;
        this.hidden = hidden;
        this.out = out;
    }

    /** A fresh model over the fixed base weights, LoRA applied (adapter "default", B = 0), in eval mode. */
    LoraModel model() {
        return model(in, hidden, out);
    }

    private static LoraModel model(int in, int hidden, int out) {
        LoraModel m = LoraModel.builder()
                .linear(L0, gaussian(DataType.FLOAT, 11, 0.5, hidden, in), gaussian(DataType.FLOAT, 12, 0.5, hidden))
                .linear(L1, gaussian(DataType.FLOAT, 13, 0.5, out, hidden), null)
                .build();
        m.applyLora(LoraConfig.builder().rank(1).alpha(1).build(), List.of(L0, L1));
        return m.eval();
    }

    /** The resident bytes of a rank-{@code r} adapter: {@code 4·r·((in + hidden) + (hidden + out))}. */
    long bytes(int rank) {
        return 4L * rank * (in + hidden + hidden + out);
    }

    /** Writes a PEFT adapter of rank {@code rank} with random A and B (from {@code seed}) into {@code dir}. */
    void writeAdapter(Path dir, int rank, long seed) {
        write(model(), dir, rank, seed);
    }

    /** An adapter for a base whose first module takes one more input: its A does not fit {@code l0}. */
    void writeMisfit(Path dir, int rank, long seed) {
        write(model(in + 1, hidden, out), dir, rank, seed);
    }

    private static void write(LoraModel maker, Path dir, int rank, long seed) {
        maker.addAdapter("x", LoraConfig.builder().rank(rank).alpha(2.0 * rank + 1).build());
        long s = seed;
        for (LoraLinear layer : maker.loraModules().values()) {
            layer.setAdapterWeights("x", gaussian(DataType.FLOAT, s++, 0.5, rank, layer.inFeatures()),
                    gaussian(DataType.FLOAT, s++, 0.5, layer.outFeatures(), rank));
        }
        try {
            maker.save(dir, "x");
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A valid rank-{@code rank} adapter whose first tensor value is NaN: its header sizes fine, its load fails. */
    void writeNaN(Path dir, int rank, long seed) {
        writeAdapter(dir, rank, seed);
        Path file = dir.resolve(PeftAdapterFiles.MODEL_FILE);
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            ByteBuffer len = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            ch.read(len, 0);
            long headerLength = len.flip().getLong();
            ByteBuffer nan = ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putFloat(Float.NaN).flip();
            ch.write(nan, 8 + headerLength);
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** A good config beside a safetensors file whose header claims more bytes than the file has. */
    void writeGarbage(Path dir, int rank, long seed) {
        writeAdapter(dir, rank, seed);
        try {
            Files.write(dir.resolve(PeftAdapterFiles.MODEL_FILE), ByteBuffer.allocate(16)
                    .order(ByteOrder.LITTLE_ENDIAN).putLong(1L << 40).putLong(0).array());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** {@code l1(l0(x))} for a batch: both modules with the batch's rows. */
    static INDArray twoLayers(AdapterStore.Batch batch, INDArray x) {
        return batch.forward(L1, batch.forward(L0, x));
    }

    /** The same on a model directly, {@code names} per row. */
    static INDArray twoLayers(LoraModel model, INDArray x, String[] names) {
        return model.forward(L1, model.forward(L0, x, names), names);
    }

    /** Deletes {@code dir} and everything in it, if it exists. */
    static void deleteTree(Path dir) {
        if (!Files.exists(dir)) {
            return;
        }
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.sorted(Comparator.reverseOrder()).toList()) {
                Files.delete(p);
            }
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /**
     * Whether {@code actual} is {@code expected} row by row, to 1e-5 relative: a mixed batch's strategy follows the
     * cost model, which sees the adapters each model holds, so the store's model and a reference holding other adapters
     * may sum in another order (ulps); a row served with another adapter or version differs by O(1).
     */
    static boolean sameOutput(INDArray expected, INDArray actual) {
        if (!java.util.Arrays.equals(expected.shape(), actual.shape())) {
            return false;
        }
        for (int i = 0; i < expected.rows(); i++) {
            if (!(io.github.lora4j.TestData.normwiseRelativeError(actual.getRow(i, true), expected.getRow(i, true))
                    <= 1e-5)) {
                return false;
            }
        }
        return true;
    }
}
