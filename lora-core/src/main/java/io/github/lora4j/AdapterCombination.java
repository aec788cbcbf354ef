package io.github.lora4j;

import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Objects;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.factory.Nd4j;

/** Weighted combinations of adapters ({@code Σ wᵢ·sᵢ·Bᵢ·Aᵢ}) as a new adapter's {@code A} and {@code B}. */
final class AdapterCombination {

    private AdapterCombination() {
    }

    /** Adds adapter {@code newName}: the {@link #concatenated} combination, alpha = rank (scaling 1). */
    static void addConcatenated(String newName, List<String> adapterNames, double[] weights, AdapterSet adapters,
                                LayerLock lock) {
        Checks.checkName(newName);
        INDArray[] ab = concatenated(parts(adapterNames, weights, adapters, lock), weights);
        put(newName, ab[0].rows(), ab, adapters, lock);
    }

    /** Adds adapter {@code newName}: the {@link #svd} combination of rank {@code rank}, alpha = rank (scaling 1). */
    static void addSvd(String newName, List<String> adapterNames, double[] weights, int rank, AdapterSet adapters,
                       LayerLock lock, long in, long out, DataType type) {
        Checks.checkName(newName);
        Checks.checkRank(rank);
        if (rank > Math.min(in, out)) {
            // A truncated SVD of an out×in matrix has at most min(in, out) singular triplets.
            throw new IllegalArgumentException("SVD target rank must be <= min(in, out) = " + Math.min(in, out)
                    + " for this " + out + "×" + in + " layer, got " + rank + "; use addWeightedAdapter (concatenated "
                    + "ranks) to keep every rank");
        }
        INDArray[] ab = svd(parts(adapterNames, weights, adapters, lock), weights, rank, type);
        put(newName, rank, ab, adapters, lock);
    }

    /** The adapters to combine, after the arguments' checks. */
    private static List<LoraAdapter> parts(List<String> adapterNames, double[] weights, AdapterSet adapters,
                                           LayerLock lock) {
        checkArguments(adapterNames, weights);
        List<LoraAdapter> parts = lock.shared(() -> adapterNames.stream().map(adapters::require).toList());
        for (LoraAdapter a : parts) {
            if (a.isDora()) {
                throw new IllegalArgumentException("adapter '" + a.name() + "' is DoRA: its magnitude rescales W + s·B·A "
                        + "row by row, so it has no B·A to combine; expected plain LoRA adapters, got " + adapterNames);
            }
        }
        return parts;
    }

    private static void put(String name, int rank, INDArray[] ab, AdapterSet adapters, LayerLock lock) {
        LoraConfig cfg = LoraConfig.builder().rank(rank).alpha(rank).init(LoraInit.ZERO).build();
        lock.exclusive(() -> adapters.put(name, cfg, ab[0], ab[1]));
    }

    /** Checks the arguments of a combination (not the names' existence). */
    static void checkArguments(List<String> adapterNames, double[] weights) {
        Objects.requireNonNull(adapterNames, "adapterNames must not be null");
        Objects.requireNonNull(weights, "weights must not be null");
        if (adapterNames.isEmpty() || adapterNames.size() != weights.length) {
            throw new IllegalArgumentException("expected one weight per adapter (at least one adapter), got "
                    + adapterNames.size() + " adapters and " + weights.length + " weights");
        }
        if (new HashSet<>(adapterNames).size() != adapterNames.size()) {
            throw new IllegalArgumentException("adapters to combine must be distinct, got " + adapterNames);
        }
        for (double w : weights) {
            if (!Double.isFinite(w)) {
                throw new IllegalArgumentException("weights must be finite, got " + Arrays.toString(weights));
            }
        }
    }

    /**
     * Concatenated ranks (PEFT's {@code "cat"}): {@code A = [sign·√|wᵢsᵢ|·Aᵢ]} by rows, {@code B = [√|wᵢsᵢ|·Bᵢ]} by
     * columns; returns {@code {A, B}}. The rank {@code Σ rᵢ} may exceed {@code min(in, out)}, as in PEFT.
     */
    static INDArray[] concatenated(List<LoraAdapter> parts, double[] weights) {
        INDArray[] as = new INDArray[parts.size()];
        INDArray[] bs = new INDArray[parts.size()];
        for (int i = 0; i < parts.size(); i++) {
            LoraAdapter p = parts.get(i);
            double f = weights[i] * p.scaling();
            double root = Math.sqrt(Math.abs(f));
            as[i] = p.a().mul(Math.copySign(root, f));
            bs[i] = p.b().mul(root);
        }
        return finite(Nd4j.concat(0, as).dup('c'), Nd4j.concat(1, bs).dup('c'), weights);
    }

    /** Truncated SVD of the combination (PEFT's {@code "svd"}) at {@code rank}; returns {@code {A, B}}. */
    static INDArray[] svd(List<LoraAdapter> parts, double[] weights, int rank, DataType type) {
        INDArray[] as = new INDArray[parts.size()];
        INDArray[] bs = new INDArray[parts.size()];
        for (int i = 0; i < parts.size(); i++) {
            LoraAdapter p = parts.get(i);
            as[i] = p.a().castTo(DataType.DOUBLE).mul(weights[i] * p.scaling());
            bs[i] = p.b().castTo(DataType.DOUBLE);
        }
        INDArray[] ba = LowRank.truncatedSvd(Nd4j.concat(1, bs), Nd4j.concat(0, as), rank);
        return finite(ba[1].castTo(type).dup('c'), ba[0].castTo(type).dup('c'), weights);
    }

    /**
     * Refuses factors that are not finite in the layer's data type (a weight of 1e77 on FLOAT overflows to
     * infinity): the layer then changes nothing.
     */
    private static INDArray[] finite(INDArray a, INDArray b, double[] weights) {
        if (Double.isNaN(Checks.maxAbsOrNaN(a)) || Double.isNaN(Checks.maxAbsOrNaN(b))) {
            throw new IllegalArgumentException("the weighted combination with weights " + Arrays.toString(weights)
                    + " is not finite in " + a.dataType() + " (NaN or infinity in its A or B); no adapter was added");
        }
        return new INDArray[] {a, b};
    }
}
