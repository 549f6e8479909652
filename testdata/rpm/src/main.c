int demo_answer(void);
int main(void) { return demo_answer() == 42 ? 0 : 1; }
