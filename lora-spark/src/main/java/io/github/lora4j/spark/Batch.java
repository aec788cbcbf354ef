package io.github.lora4j.spark;

import com.esotericsoftware.kryo.DefaultSerializer;
import com.esotericsoftware.kryo.serializers.JavaSerializer;
import java.io.Serializable;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The rows one partition contributes to one step: up to {@code batchSizePerWorker} rows, in partition order. For a
 * {@code MultiLayerNetwork} every array holds one entry; for a {@code ComputationGraph} one per input / output.
 *
 * @param rows         number of rows
 * @param features     one array per network input, {@code [rows, ...]}
 * @param labels       one array per network output, {@code [rows, ...]}
 * @param featureMasks one mask per input, or null when the data has none
 * @param labelMasks   one mask per output, or null when the data has none
 *
 * <p>Java-serialised under Kryo too: Kryo 4's field serialiser (Spark's) cannot build records.
 */
@DefaultSerializer(JavaSerializer.class)
record Batch(int rows, HeapArray[] features, HeapArray[] labels, HeapArray[] featureMasks, HeapArray[] labelMasks)
        implements Serializable {

    static INDArray[] toNd4j(HeapArray[] arrays) {
        if (arrays == null) {
            return null;
        }
        INDArray[] out = new INDArray[arrays.length];
        for (int i = 0; i < arrays.length; i++) {
            out[i] = arrays[i] == null ? null : arrays[i].toNd4j();
        }
        return out;
    }
}
