package io.github.lora4j.examples;

import io.github.lora4j.LoraMath;

/** Prints how many parameters LoRA trains instead of full fine-tuning, per size and rank. */
public final class ParameterSavings {

    private ParameterSavings() {
    }

    /** Entry point: prints the table for a few common sizes. */
    public static void main(String[] args) {
        long[][] sizes = {{1024, 1024}, {4096, 4096}};
        System.out.printf("%-12s %4s %14s %12s %9s%n", "d x k", "r", "full", "LoRA", "savings");
        for (long[] s : sizes) {
            for (int r : new int[] {1, 2, 4, 8, 16}) {
                System.out.printf("%-12s %4d %,14d %,12d %8.3f%%%n", s[0] + "x" + s[1], r,
                        LoraMath.fullParameters(s[0], s[1]), LoraMath.loraParameters(s[0], s[1], r),
                        100 * LoraMath.savings(s[0], s[1], r));
            }
        }
        System.out.println("Largest rank keeping 99 % savings for 1024 x 1024: " + LoraMath.maxRankForSavings(1024, 1024, 0.99));
    }
}
