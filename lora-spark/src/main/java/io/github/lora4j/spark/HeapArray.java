package io.github.lora4j.spark;

import com.esotericsoftware.kryo.DefaultSerializer;
import com.esotericsoftware.kryo.serializers.JavaSerializer;
import java.io.Serializable;
import java.util.Arrays;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * An array of rows on the Java heap: {@code shape[0]} rows of {@code Π shape[1..]} elements each, c order, in a
 * network's data type. How the rows of the training data are held between steps.
 *
 * @param shape the shape, rank ≥ 1; {@code shape[0]} is the number of rows
 * @param data  {@code Π shape} elements
 *
 * <p>Java-serialised under Kryo too: Kryo 4's field serialiser (Spark's) cannot build records.
 */
@DefaultSerializer(JavaSerializer.class)
record HeapArray(long[] shape, FlatVector data) implements Serializable {

    static HeapArray of(INDArray arr, DataType type) {
        return new HeapArray(arr.shape().clone(), FlatVector.of(arr, type));
    }

    int rows() {
        return (int) shape[0];
    }

    int rowSize() {
        int n = 1;
        for (int i = 1; i < shape.length; i++) {
            n = Math.multiplyExact(n, (int) shape[i]);
        }
        return n;
    }

    /** The shape after the row dimension. */
    long[] rowShape() {
        return Arrays.copyOfRange(shape, 1, shape.length);
    }

    INDArray toNd4j() {
        return data.toArray(shape);
    }
}
